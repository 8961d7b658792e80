-- otpgate database schema. The foundation part (up to "Migrations") is applied at every
-- start and every statement in it is idempotent; migration steps run once each.

-- One pending one-time code per address; a new login request replaces it.
CREATE TABLE IF NOT EXISTS otp_challenges (
    address    TEXT PRIMARY KEY,          -- normalised phone number or e-mail address
    appid      TEXT NOT NULL,             -- the app that asked; verification must come from the same app
    otp_hash   BLOB NOT NULL,             -- HMAC-SHA256(secret, address || 0 || code); never the code
    created_at INTEGER NOT NULL,          -- unix seconds; drives the resend interval
    expires_at INTEGER NOT NULL,          -- unix seconds
    attempts   INTEGER NOT NULL DEFAULT 0, -- wrong guesses so far
    claimed_at INTEGER                    -- set while a correct code is being exchanged upstream
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS otp_challenges_expires_at ON otp_challenges (expires_at);

-- Users who completed a login.
CREATE TABLE IF NOT EXISTS users (
    address      TEXT PRIMARY KEY,
    uid          TEXT NOT NULL,           -- upstream user id, as text
    name         TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    last_login   INTEGER NOT NULL,
    token_sha256 TEXT NOT NULL            -- SHA-256 of the last access token issued; never the token
) WITHOUT ROWID;

-- Server-side values that must survive restarts; never a secret (the OTP key lives in a file).
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Outgoing code messages (the courier): queued in the transaction that stores the
-- code, sent and retried by a background worker, kept as a delivery record.
CREATE TABLE IF NOT EXISTS courier (
    id              INTEGER PRIMARY KEY,
    address         TEXT NOT NULL,            -- normalised phone number or e-mail address
    appid           TEXT NOT NULL,
    otp_hash        BLOB NOT NULL,            -- the challenge delivered; a final failure deletes exactly it
    otp             TEXT,                     -- no longer written: earlier releases kept the code here in clear
    body            TEXT,                     -- no longer written: earlier releases kept the message here in clear
    status          TEXT NOT NULL,            -- queued, sent, failed, or cancelled (code used, replaced or expired)
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,                     -- the last failure, for operators; never credentials
    next_attempt_ms INTEGER NOT NULL,         -- unix milliseconds; also a lease while an attempt runs
    expires_at      INTEGER NOT NULL,         -- unix seconds: the code's expiry, after which retrying is pointless
    created_at      INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS courier_queued ON courier (status, next_attempt_ms);

-- ===========================================================================
-- Migrations. Everything above is the foundation schema (user_version 0) and is
-- applied at every start. Each step below runs once, in order, in one
-- transaction that also sets `PRAGMA user_version` to its number; a step starts
-- with a line `-- migration: N name`. Append new steps; never edit an applied one.
-- PostgreSQL takes the same steps, one file each (migrations/postgres/NNN_name.sql):
-- a step that changes nothing on one of the two says so there.
-- ===========================================================================

-- migration: 1 sessions_and_profiles
-- Sessions, profiles, contacts and the notification outbox.

-- Users get a stable local id and a profile; the last-token hash moves to sessions.
CREATE TABLE users_v1 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- stable local id, never reused
    address    TEXT NOT NULL UNIQUE,              -- normalised phone number or e-mail address
    uid        TEXT NOT NULL,                     -- upstream user id, as text
    name       TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL DEFAULT '',
    photo      TEXT NOT NULL DEFAULT '',          -- photo URL
    created_at INTEGER NOT NULL,
    last_login INTEGER NOT NULL,
    ts         INTEGER NOT NULL                   -- unix seconds of the last profile change (or of joining)
);
INSERT INTO users_v1 (address, uid, name, created_at, last_login, ts)
    SELECT address, uid, name, created_at, last_login, created_at FROM users ORDER BY created_at, address;

-- One row per logged-in device; only a SHA-256 of the access token is kept.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users_v1 (id) ON DELETE CASCADE,
    appid        TEXT NOT NULL,
    device       TEXT NOT NULL DEFAULT '',  -- installation id; '' when the app sent none
    created_at   INTEGER NOT NULL,          -- unix seconds
    last_seen_ms INTEGER NOT NULL,          -- unix milliseconds of the last use; orders eviction
    expires_at   INTEGER NOT NULL           -- unix seconds; the expiry asked of upstream
) WITHOUT ROWID;

-- Foundation databases kept the last token of each user: it stays valid as a
-- session that expires a year (the default TOKEN_EXPIRY_MINS) after that login.
INSERT INTO sessions (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at)
    SELECT u.token_sha256, v.id, '', '', u.last_login, u.last_login * 1000, u.last_login + 31536000
    FROM users u JOIN users_v1 v ON v.address = u.address WHERE u.token_sha256 <> '';

CREATE INDEX sessions_user ON sessions (user_id, last_seen_ms);
-- A re-login from the same installation replaces its session.
CREATE UNIQUE INDEX sessions_device ON sessions (user_id, appid, device) WHERE device <> '';

-- Phones each user uploaded from their address book (not necessarily users).
CREATE TABLE contacts (
    owner_id INTEGER NOT NULL REFERENCES users_v1 (id) ON DELETE CASCADE,
    phone    TEXT NOT NULL,                 -- normalised like login phones
    added_at INTEGER NOT NULL,
    PRIMARY KEY (owner_id, phone)
) WITHOUT ROWID;
-- Finds who has a phone as a contact when that phone joins.
CREATE INDEX contacts_phone ON contacts (phone);

-- The new users table takes the old one's name; SQLite rewrites the references
-- to users_v1 above (foreign keys are enforced, so they cannot name the old table).
DROP TABLE users;
ALTER TABLE users_v1 RENAME TO users;
CREATE INDEX users_ts ON users (ts);

-- Upstream messages waiting to be sent: written in the transaction that causes
-- them, deleted once upstream acknowledged them.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient       TEXT NOT NULL,          -- address the message goes to
    payload         TEXT NOT NULL,          -- JSON
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,       -- unix seconds; also a lease while a send is in flight
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- migration: 2 sealed_messages
-- Queued messages are kept encrypted (code and text), with a key that is not in the
-- database; the service seals rows left in clear by earlier releases at start.
ALTER TABLE courier ADD COLUMN sealed BLOB;

-- migration: 3 challenge_ids
-- The challenge id a start reply carries: a verify that sends it back is bound to
-- that code and its wrong guesses are counted apart from guesses without it.
ALTER TABLE otp_challenges ADD COLUMN challenge_sha256 BLOB;   -- SHA-256 of the id; NULL for codes issued before
ALTER TABLE otp_challenges ADD COLUMN bound_attempts INTEGER NOT NULL DEFAULT 0;

-- migration: 4 photos_and_push
-- Photos uploaded to the service keep the thumbnail the apps show in lists, and each
-- session keeps the push registration of its device (op=setnotify).
ALTER TABLE users ADD COLUMN thumbnail BLOB;        -- 100x100 JPEG of the photo; NULL without one
ALTER TABLE sessions ADD COLUMN notify_token TEXT;  -- push token of the device; NULL when none was given
ALTER TABLE sessions ADD COLUMN notify_sender TEXT; -- the push service's sender id (fcmid)
ALTER TABLE sessions ADD COLUMN device_type TEXT;   -- the platform SDK's device type (dt)

-- migration: 5 groups
-- Groups (op=setgroup and the ops after it), mirrored from the platform: gid is the
-- platform's group id. Members are kept by phone, users or not yet.
CREATE TABLE chat_groups (
    gid        INTEGER PRIMARY KEY,        -- the platform's group id
    name       TEXT NOT NULL DEFAULT '',
    photo      TEXT NOT NULL DEFAULT '',   -- file name under urls.download; '' without one
    thumbnail  BLOB,                       -- 100x100 JPEG of the photo
    created_at INTEGER NOT NULL,
    ts         INTEGER NOT NULL            -- unix seconds of the last change
);
CREATE TABLE group_members (
    gid   INTEGER NOT NULL REFERENCES chat_groups (gid) ON DELETE CASCADE,
    phone TEXT NOT NULL,                   -- normalised like login phones
    role  INTEGER NOT NULL DEFAULT 0,      -- 0 member, 1 admin, 2 owner
    PRIMARY KEY (gid, phone)
) WITHOUT ROWID;
-- Finds a user's groups for getcontacts.
CREATE INDEX group_members_phone ON group_members (phone);

-- migration: 6 hashed_contacts
-- Address books keep no phone number: each entry is a 64-bit keyed hash of the phone
-- (otpgate_phone_hash, registered by the service with a key derived from its secret),
-- and users are matched by the same hash of their address.
ALTER TABLE users ADD COLUMN address_hash INTEGER;    -- otpgate_phone_hash(address)
UPDATE users SET address_hash = otpgate_phone_hash(address);
-- With ts: a sync of changes skips contacts unchanged since without reading their rows.
CREATE INDEX users_address_hash ON users (address_hash, ts);
CREATE TABLE contact_hashes (
    owner_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone_hash INTEGER NOT NULL,                       -- otpgate_phone_hash(phone)
    PRIMARY KEY (owner_id, phone_hash)
) WITHOUT ROWID;
INSERT OR IGNORE INTO contact_hashes (owner_id, phone_hash) SELECT owner_id, otpgate_phone_hash(phone) FROM contacts;
DROP TABLE contacts;
ALTER TABLE contact_hashes RENAME TO contacts;
-- Finds who has a phone as a contact when that phone joins or its profile changes.
CREATE INDEX contacts_phone_hash ON contacts (phone_hash);
-- The dropped phones are still in free pages: the service rewrites the file at its next start.
DELETE FROM settings WHERE key = 'rewritten_without_secrets';

-- migration: 7 account_deletion
-- The outbox also carries the platform's userdel for a deleted account, retried like a
-- notice until the platform takes it.
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';  -- 'message' or 'userdel'

-- migration: 8 audit_events
-- Security events per address, for operators (GET /admin/events), kept
-- AUDIT_RETENTION_DAYS. Keyed by the address's phone hash: a failed login on a
-- number that never became a user leaves no number in clear.
CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,          -- unix seconds
    address_hash INTEGER NOT NULL,          -- otpgate_phone_hash(address)
    event        TEXT NOT NULL,             -- login, login_failed, locked_out, delivery_failed, sessions_revoked, account_deleted
    detail       TEXT NOT NULL DEFAULT ''   -- the app, the reason or the sender; never a code or token
);
CREATE INDEX audit_events_address ON audit_events (address_hash, at);
CREATE INDEX audit_events_at ON audit_events (at);

-- migration: 9 linked_addresses
-- Further addresses of a user, each proven while signed in: a login through one of
-- them is the same user, its token minted with linkto = the user's own address.
CREATE TABLE linked_addresses (
    address   TEXT PRIMARY KEY,            -- normalised phone, e-mail address or provider:subject
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    uid       TEXT NOT NULL DEFAULT '',    -- the platform's user id of this address, once a login through it got one
    linked_at INTEGER NOT NULL             -- unix seconds
) WITHOUT ROWID;
CREATE INDEX linked_addresses_user ON linked_addresses (user_id);
-- The linked address a session logged in through, ended with it; '' for the user's own.
ALTER TABLE sessions ADD COLUMN via TEXT NOT NULL DEFAULT '';

-- migration: 10 file_references
-- Names of the stored files uploaded as chat attachments. No other row refers to them
-- (their URL is in the chats), so a photo file of the same bytes is never deleted
-- while one is listed here.
CREATE TABLE attachment_files (
    name TEXT PRIMARY KEY                  -- <sha256>.<extension> under FILES_DIR
) WITHOUT ROWID;
-- Whether anyone still shows a photo file, asked when a photo is replaced or removed.
CREATE INDEX users_photo ON users (photo) WHERE photo <> '';
CREATE INDEX chat_groups_photo ON chat_groups (photo) WHERE photo <> '';

-- migration: 11 contact_counts
-- How many contacts each user keeps, changed with their address book in the same
-- transaction, so that admitting an upload does not count the whole book.
ALTER TABLE users ADD COLUMN contact_count INTEGER NOT NULL DEFAULT 0;
UPDATE users SET contact_count = (SELECT count(*) FROM contacts WHERE owner_id = users.id)
    WHERE id IN (SELECT owner_id FROM contacts);

-- migration: 12 login_functions
-- Nothing to do: PostgreSQL's step 12 creates functions that run the login's statements
-- on the server; SQLite runs them in the service (store/sqlite/login.rs).

-- migration: 13 delivery_routes
-- Which named provider instance took each message and the provider's id for it, which
-- its delivery receipts name; the last receipt; the instances whose delivery was
-- reported failed (comma-separated; a resend goes to another); the channel a client
-- asked for (NULL: its route's first).
ALTER TABLE courier ADD COLUMN instance TEXT;
ALTER TABLE courier ADD COLUMN provider_message_id TEXT;
ALTER TABLE courier ADD COLUMN receipt_status TEXT;
ALTER TABLE courier ADD COLUMN receipt_error TEXT;
ALTER TABLE courier ADD COLUMN receipt_at INTEGER;       -- unix seconds
ALTER TABLE courier ADD COLUMN failed_via TEXT NOT NULL DEFAULT '';
ALTER TABLE courier ADD COLUMN channel TEXT;
CREATE INDEX courier_provider_message ON courier (provider_message_id) WHERE provider_message_id IS NOT NULL;
-- Sent messages kept sealed for a resend on a failed receipt, until their code expires.
CREATE INDEX courier_kept ON courier (expires_at) WHERE status = 'sent' AND sealed IS NOT NULL;
