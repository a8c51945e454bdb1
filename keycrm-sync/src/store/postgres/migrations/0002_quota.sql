-- keycrm-sync PostgreSQL store, schema version 2: one request quota per API key shared by
-- every instance (PostgresQuota). The state of the generic cell rate algorithm: the
-- theoretical arrival time and the gate a 429 closed, both BIGINT microseconds of the
-- database's clock. The key is stored as its SHA-256 hash, never in clear.
CREATE TABLE quota (
    key_hash   TEXT   PRIMARY KEY,
    tat        BIGINT,
    gate_until BIGINT
);
