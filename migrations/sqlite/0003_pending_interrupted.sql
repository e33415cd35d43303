-- Why the mirror's last run ended without recording a result (its task panicked, or the store
-- refused the result): the run was put back in the queue. NULL once a run records its result.
ALTER TABLE pending ADD COLUMN interrupted TEXT;
