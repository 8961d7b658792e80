-- Photos uploaded to the service keep the thumbnail the apps show in lists, and each
-- session keeps the push registration of its device (op=setnotify).
ALTER TABLE users ADD COLUMN thumbnail BYTEA;       -- 100x100 JPEG of the photo; NULL without one
ALTER TABLE sessions ADD COLUMN notify_token TEXT;  -- push token of the device; NULL when none was given
ALTER TABLE sessions ADD COLUMN notify_sender TEXT; -- the push service's sender id (fcmid)
ALTER TABLE sessions ADD COLUMN device_type TEXT;   -- the platform SDK's device type (dt)
