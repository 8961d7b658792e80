-- Names of the stored files uploaded as chat attachments. No other row refers to them
-- (their URL is in the chats), so a photo file of the same bytes is never deleted
-- while one is listed here.
CREATE TABLE attachment_files (
    name TEXT PRIMARY KEY                  -- <sha256>.<extension> under FILES_DIR
);
-- Whether anyone still shows a photo file, asked when a photo is replaced or removed.
CREATE INDEX users_photo ON users (photo) WHERE photo <> '';
CREATE INDEX chat_groups_photo ON chat_groups (photo) WHERE photo <> '';
