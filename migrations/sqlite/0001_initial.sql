-- ferry serve's durable state. Times are Unix milliseconds; booleans are 0/1.

-- Every mirror the store has heard of. `config_state` says whether it is in the current
-- configuration ('configured'), was never registered ('adhoc': enqueued directly, as in tests)
-- or was dropped from the configuration ('removed': kept for its history, never claimed).
CREATE TABLE mirrors (
    name           TEXT PRIMARY KEY NOT NULL,
    source         TEXT NOT NULL DEFAULT '',
    fingerprint    TEXT,
    config_state   TEXT NOT NULL DEFAULT 'adhoc'
                   CHECK (config_state IN ('adhoc', 'configured', 'removed')),
    position       INTEGER NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'idle',
    failure_streak INTEGER NOT NULL DEFAULT 0,
    notified       INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Finished runs with their full report (the `--json` document of the mirror).
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    mirror       TEXT NOT NULL REFERENCES mirrors (name),
    trigger_name TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    ok           INTEGER NOT NULL,
    report       TEXT NOT NULL
) STRICT;
CREATE INDEX runs_by_mirror ON runs (mirror, id);

-- Every accepted trigger. `run_id` stays NULL until a run handles the event. AUTOINCREMENT
-- keeps ids increasing forever: a claim remembers the newest id it covers.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    mirror       TEXT NOT NULL REFERENCES mirrors (name),
    trigger_name TEXT NOT NULL,
    detail       TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    run_id       INTEGER REFERENCES runs (id)
) STRICT;
CREATE INDEX events_by_mirror_run ON events (mirror, run_id);

-- The queue: at most one row per mirror. `claimed_through` is the newest event id of the
-- mirror when the running sync was claimed; finishing it handles exactly those events.
CREATE TABLE pending (
    mirror          TEXT PRIMARY KEY NOT NULL REFERENCES mirrors (name),
    queued          INTEGER NOT NULL,
    running         INTEGER NOT NULL,
    not_before      INTEGER NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    claimed_through INTEGER
) STRICT;

-- Per-destination status, keyed by the redacted URL.
CREATE TABLE destinations (
    mirror          TEXT NOT NULL REFERENCES mirrors (name),
    url             TEXT NOT NULL,
    position        INTEGER NOT NULL DEFAULT 0,
    last_success_at INTEGER,
    last_attempt_at INTEGER,
    last_error      TEXT,
    PRIMARY KEY (mirror, url)
) STRICT;
