-- ferry serve's durable state on PostgreSQL, shared by every node. The same tables as the
-- SQLite store (migrations/sqlite, 0001 to 0005 together) with PostgreSQL's types: times are
-- Unix milliseconds (BIGINT), flags are BOOLEAN. Applied by sqlx's migrator, which holds an
-- advisory lock while it migrates, so nodes starting at once migrate one after the other.
--
-- Rolling upgrades: a migration added here must keep the previous release working (add
-- tables and nullable columns; never drop or rename what it reads). A node refuses to start
-- on a store migrated beyond what it knows.

-- Every mirror the store has heard of (see the SQLite schema for config_state).
CREATE TABLE mirrors (
    name           TEXT PRIMARY KEY,
    source         TEXT NOT NULL DEFAULT '',
    fingerprint    TEXT,
    config_state   TEXT NOT NULL DEFAULT 'adhoc'
                   CHECK (config_state IN ('adhoc', 'configured', 'removed')),
    position       BIGINT NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'idle',
    failure_streak BIGINT NOT NULL DEFAULT 0,
    notified       BOOLEAN NOT NULL DEFAULT FALSE,
    source_digest  TEXT,
    last_node      TEXT
);

CREATE TABLE runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mirror       TEXT NOT NULL REFERENCES mirrors (name),
    trigger_name TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT NOT NULL,
    ok           BOOLEAN NOT NULL,
    report       TEXT NOT NULL,
    node         TEXT
);
CREATE INDEX runs_by_mirror ON runs (mirror, id);

-- Ids only grow: a claim remembers the newest id it covers. An enqueue locks the mirror's
-- pending row before it inserts its event, so no event older than a claim's watermark can
-- commit after the claim.
CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mirror       TEXT NOT NULL REFERENCES mirrors (name),
    trigger_name TEXT NOT NULL,
    detail       TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    run_id       BIGINT REFERENCES runs (id),
    refs         TEXT
);
CREATE INDEX events_by_mirror_run ON events (mirror, run_id);

-- The queue: at most one row per mirror; a running row carries its node and lease.
CREATE TABLE pending (
    mirror          TEXT PRIMARY KEY REFERENCES mirrors (name),
    queued          BOOLEAN NOT NULL,
    running         BOOLEAN NOT NULL,
    not_before      BIGINT NOT NULL,
    attempt         BIGINT NOT NULL DEFAULT 0,
    claimed_through BIGINT,
    interrupted     TEXT,
    node            TEXT,
    lease_until     BIGINT
);

CREATE TABLE destinations (
    mirror          TEXT NOT NULL REFERENCES mirrors (name),
    url             TEXT NOT NULL,
    position        BIGINT NOT NULL DEFAULT 0,
    last_success_at BIGINT,
    last_attempt_at BIGINT,
    last_error      TEXT,
    PRIMARY KEY (mirror, url)
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    version      TEXT NOT NULL
);

CREATE TABLE timers (
    name    TEXT PRIMARY KEY,
    next_at BIGINT NOT NULL
);
