-- What each mirror's last run synced from: a digest of the source's selected refs as that
-- run read them. Polling compares the source with it rather than with the shared cache, which
-- other mirrors and commands may have fetched into already.
ALTER TABLE mirrors ADD COLUMN source_digest TEXT;
