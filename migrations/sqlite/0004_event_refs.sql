-- The full names of the refs a push event (a webhook, a CodeCommit event) said it changed, as
-- a JSON array; NULL when the event named none or was not a push. A run whose events all
-- named refs fetches and pushes only those.
ALTER TABLE events ADD COLUMN refs TEXT;
