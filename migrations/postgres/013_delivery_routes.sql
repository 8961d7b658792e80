-- Which named provider instance took each message and the provider's id for it, which
-- its delivery receipts name; the last receipt; the instances whose delivery was
-- reported failed (comma-separated; a resend goes to another); the channel a client
-- asked for (NULL: its route's first).
ALTER TABLE courier ADD COLUMN IF NOT EXISTS instance TEXT;
ALTER TABLE courier ADD COLUMN IF NOT EXISTS provider_message_id TEXT;
ALTER TABLE courier ADD COLUMN IF NOT EXISTS receipt_status TEXT;
ALTER TABLE courier ADD COLUMN IF NOT EXISTS receipt_error TEXT;
ALTER TABLE courier ADD COLUMN IF NOT EXISTS receipt_at BIGINT;
ALTER TABLE courier ADD COLUMN IF NOT EXISTS failed_via TEXT NOT NULL DEFAULT '';
ALTER TABLE courier ADD COLUMN IF NOT EXISTS channel TEXT;
CREATE INDEX IF NOT EXISTS courier_provider_message ON courier (provider_message_id) WHERE provider_message_id IS NOT NULL;
-- Sent messages kept sealed for a resend on a failed receipt, until their code expires.
CREATE INDEX IF NOT EXISTS courier_kept ON courier (expires_at) WHERE status = 'sent' AND sealed IS NOT NULL;
