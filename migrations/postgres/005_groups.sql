-- Groups (op=setgroup and the ops after it), mirrored from the platform: gid is the
-- platform's group id. Members are kept by phone, users or not yet.
CREATE TABLE chat_groups (
    gid        BIGINT PRIMARY KEY,         -- the platform's group id
    name       TEXT NOT NULL DEFAULT '',
    photo      TEXT NOT NULL DEFAULT '',   -- file name under urls.download; '' without one
    thumbnail  BYTEA,                      -- 100x100 JPEG of the photo
    created_at BIGINT NOT NULL,
    ts         BIGINT NOT NULL             -- last change
);
CREATE TABLE group_members (
    gid   BIGINT NOT NULL REFERENCES chat_groups (gid) ON DELETE CASCADE,
    phone TEXT COLLATE "C" NOT NULL,       -- normalised like login phones
    role  INTEGER NOT NULL DEFAULT 0,      -- 0 member, 1 admin, 2 owner
    PRIMARY KEY (gid, phone)
);
-- Finds a user's groups for getcontacts.
CREATE INDEX group_members_phone ON group_members (phone);
