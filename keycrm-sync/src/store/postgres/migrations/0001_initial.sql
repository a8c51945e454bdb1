-- keycrm-sync PostgreSQL store, schema version 1.
-- Same layout and encodings as the SQLite store: timestamps are BIGINT microseconds since the
-- Unix epoch (UTC), JSON is TEXT (kept byte for byte), enums are their `as_str` names.
-- Outbox and inbox rows carry a lease (lease_owner, lease_until in the database's clock):
-- a row is handed to one instance at a time, and taken over once the lease runs out.

CREATE TABLE mappings (
    kind              TEXT    NOT NULL,
    local_id          TEXT    COLLATE "C" NOT NULL,
    remote_id         BIGINT,
    state             TEXT    NOT NULL,
    last_sync_at      BIGINT,
    error             TEXT,
    content_hash      TEXT,
    base              TEXT,
    remote_updated_at BIGINT,
    PRIMARY KEY (kind, local_id)
);
CREATE UNIQUE INDEX mappings_remote ON mappings (kind, remote_id) WHERE remote_id IS NOT NULL;
CREATE INDEX mappings_state ON mappings (kind, state);

CREATE TABLE outbox (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT    NOT NULL,
    local_id        TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    revision        BIGINT  NOT NULL DEFAULT 1,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    last_error      TEXT,
    dead            BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner     TEXT,
    lease_until     BIGINT
);
CREATE UNIQUE INDEX outbox_live ON outbox (kind, local_id) WHERE NOT dead;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE NOT dead;
CREATE INDEX outbox_dead ON outbox (kind, created_at) WHERE dead;

CREATE TABLE inbox (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key   TEXT    COLLATE "C" NOT NULL UNIQUE,
    event        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL,
    processed_at BIGINT,
    status       TEXT    NOT NULL,
    error        TEXT,
    lease_owner  TEXT,
    lease_until  BIGINT
);
CREATE INDEX inbox_queue ON inbox (received_at, id) WHERE status = 'pending';
CREATE INDEX inbox_done ON inbox (status, processed_at);
-- InboxDedupe::Latest looks up the newest row of a key prefix.
CREATE INDEX inbox_key_prefix ON inbox (dedupe_key, id);

CREATE TABLE cursors (
    kind       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE conflicts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                BIGINT NOT NULL,
    kind              TEXT   NOT NULL,
    local_id          TEXT   NOT NULL,
    remote_id         BIGINT,
    field             TEXT   NOT NULL,
    base              TEXT,
    local             TEXT,
    remote            TEXT,
    winner            TEXT   NOT NULL,
    reason            TEXT   NOT NULL,
    local_updated_at  BIGINT,
    remote_updated_at BIGINT
);
CREATE INDEX conflicts_at ON conflicts (at);
CREATE INDEX conflicts_kind_at ON conflicts (kind, at);
CREATE INDEX conflicts_record ON conflicts (kind, local_id);

CREATE TABLE audit (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT NOT NULL,
    kind     TEXT   NOT NULL,
    local_id TEXT   NOT NULL,
    action   TEXT   NOT NULL,
    detail   TEXT   NOT NULL
);
CREATE INDEX audit_at ON audit (at);
