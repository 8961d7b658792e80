-- The outbox also carries the platform's userdel for a deleted account, retried like a
-- notice until the platform takes it.
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';  -- 'message' or 'userdel'
