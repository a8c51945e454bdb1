-- keycrm-sync store, schema version 1.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC). JSON is stored as TEXT.
-- Enums are stored by their `as_str` names; they are validated when read, not by CHECK
-- constraints, so that adding a variant needs no table rebuild.

CREATE TABLE mappings (
    kind              TEXT    NOT NULL,
    local_id          TEXT    NOT NULL,
    remote_id         INTEGER,
    state             TEXT    NOT NULL,
    last_sync_at      INTEGER,
    error             TEXT,
    content_hash      TEXT,
    base              TEXT,
    remote_updated_at INTEGER,
    PRIMARY KEY (kind, local_id)
);
-- get_mapping_by_remote; one local record per remote id.
CREATE UNIQUE INDEX mappings_remote ON mappings (kind, remote_id) WHERE remote_id IS NOT NULL;
-- list_mappings(kind, state), counts.
CREATE INDEX mappings_state ON mappings (kind, state);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,
    local_id        TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    revision        INTEGER NOT NULL DEFAULT 1,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    last_error      TEXT,
    dead            INTEGER NOT NULL DEFAULT 0 CHECK (dead IN (0, 1))
);
-- Coalescing: at most one live item per record.
CREATE UNIQUE INDEX outbox_live ON outbox (kind, local_id) WHERE dead = 0;
-- due_outbox.
CREATE INDEX outbox_due ON outbox (dead, next_attempt_at);
-- dead_letters(kind), counts.
CREATE INDEX outbox_dead ON outbox (dead, kind, created_at);

CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key   TEXT    NOT NULL UNIQUE,
    event        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    processed_at INTEGER,
    status       TEXT    NOT NULL,
    error        TEXT
);
-- inbox_pending, counts.
CREATE INDEX inbox_queue ON inbox (status, received_at);
-- purge.
CREATE INDEX inbox_done ON inbox (status, processed_at);

CREATE TABLE cursors (
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE conflicts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at                INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    local_id          TEXT    NOT NULL,
    remote_id         INTEGER,
    field             TEXT    NOT NULL,
    base              TEXT,
    local             TEXT,
    remote            TEXT,
    winner            TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    local_updated_at  INTEGER,
    remote_updated_at INTEGER
);
-- list_conflicts(None), purge.
CREATE INDEX conflicts_at ON conflicts (at);
-- list_conflicts(Some(kind)).
CREATE INDEX conflicts_kind_at ON conflicts (kind, at);

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    local_id TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    detail   TEXT    NOT NULL
);
-- list_audit, purge.
CREATE INDEX audit_at ON audit (at);
