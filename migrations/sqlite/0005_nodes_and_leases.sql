-- Nodes and leases (the schema the Postgres store shares; see migrations/postgres). With
-- SQLite one process owns the store, so the node is always that process and a restart
-- requeues whatever it was running.

-- A running sync's claim: the node running it and when the claim lapses unless the node
-- renews it (its heartbeat). Another node takes over a lapsed claim.
ALTER TABLE pending ADD COLUMN node TEXT;
ALTER TABLE pending ADD COLUMN lease_until INTEGER;
-- The node that ran the mirror last, and each run's node: where its cache is warm.
ALTER TABLE mirrors ADD COLUMN last_node TEXT;
ALTER TABLE runs ADD COLUMN node TEXT;

-- Every node serving this store and its last heartbeat; live while that is fresher than a lease.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    version      TEXT NOT NULL
) STRICT;

-- Timers that fire once per interval for all nodes together (polling, reconciliation,
-- pruning): the node that moves `next_at` forward fires it.
CREATE TABLE timers (
    name    TEXT PRIMARY KEY NOT NULL,
    next_at INTEGER NOT NULL
) STRICT;
