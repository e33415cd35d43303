-- Fleets in `ferry serve`: the fleet a mirror is a member of (NULL: a mirror of the config
-- file), so that the page groups them and a fleet's rediscovery retires only its own members.
ALTER TABLE mirrors ADD COLUMN fleet TEXT;

-- Each fleet's last discovery, whichever node ran it: shown on the page and in the API.
CREATE TABLE fleets (
    name          TEXT PRIMARY KEY NOT NULL,
    -- When the last discovery ran, and when the last one that found the members succeeded.
    attempted_at  INTEGER NOT NULL,
    succeeded_at  INTEGER,
    -- How many members are synced now.
    members       INTEGER NOT NULL,
    -- Why the last discovery failed as a whole (its known members kept syncing); NULL when
    -- it did not.
    error         TEXT,
    -- What else it reported, a JSON array of lines (an incomplete listing, a member whose
    -- destination could not be created, ...).
    problems      TEXT NOT NULL,
    node          TEXT
) STRICT;
