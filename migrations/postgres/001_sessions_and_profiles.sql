-- otpgate PostgreSQL schema: the SQLite schema (schema.sql) after its migrations 1 to 3.
-- Times are unix seconds unless a name ends in _ms; blobs are BYTEA.

-- One pending one-time code per address; a new login request replaces it.
CREATE TABLE otp_challenges (
    address          TEXT PRIMARY KEY,           -- normalised phone number or e-mail address
    appid            TEXT NOT NULL,              -- the app that asked; verification must come from the same app
    otp_hash         BYTEA NOT NULL,             -- HMAC-SHA256(secret, address || 0 || code); never the code
    created_at       BIGINT NOT NULL,            -- drives the resend interval
    expires_at       BIGINT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0, -- wrong guesses so far without the challenge id
    claimed_at       BIGINT,                     -- set while a correct code is being exchanged upstream
    challenge_sha256 BYTEA,                      -- SHA-256 of the challenge id the start reply carried
    bound_attempts   INTEGER NOT NULL DEFAULT 0  -- wrong guesses so far that sent the challenge id
);

CREATE INDEX otp_challenges_expires_at ON otp_challenges (expires_at);

-- Users who completed a login, with the profile their contacts see.
CREATE TABLE users (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- stable local id, never reused
    -- Byte order (COLLATE "C"), as in SQLite: contact sync pages by (ts, address).
    address    TEXT COLLATE "C" NOT NULL UNIQUE, -- normalised phone number or e-mail address
    uid        TEXT NOT NULL,                     -- upstream user id, as text
    name       TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL DEFAULT '',
    photo      TEXT NOT NULL DEFAULT '',          -- photo URL
    created_at BIGINT NOT NULL,
    last_login BIGINT NOT NULL,
    ts         BIGINT NOT NULL                    -- last profile change (or joining)
);

CREATE INDEX users_ts ON users (ts);

-- Server-side values that must survive restarts; never a secret.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- One row per logged-in device; only a SHA-256 of the access token is kept.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    appid        TEXT NOT NULL,
    device       TEXT NOT NULL DEFAULT '', -- installation id; '' when the app sent none
    created_at   BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,          -- the last use; orders eviction
    expires_at   BIGINT NOT NULL           -- the expiry asked of upstream
);

CREATE INDEX sessions_user ON sessions (user_id, last_seen_ms);
-- A re-login from the same installation replaces its session.
CREATE UNIQUE INDEX sessions_device ON sessions (user_id, appid, device) WHERE device <> '';

-- Phones each user uploaded from their address book (not necessarily users).
CREATE TABLE contacts (
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone    TEXT NOT NULL,                -- normalised like login phones
    added_at BIGINT NOT NULL,
    PRIMARY KEY (owner_id, phone)
);

-- Finds who has a phone as a contact when that phone joins.
CREATE INDEX contacts_phone ON contacts (phone);

-- Upstream messages waiting to be sent: written in the transaction that causes
-- them, deleted once upstream acknowledged them.
CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient       TEXT NOT NULL,             -- address the message goes to
    payload         TEXT NOT NULL,             -- JSON
    created_at      BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,           -- also a lease while a send is in flight
    last_error      TEXT
);

CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- Outgoing code messages (the courier): queued in the transaction that stores the
-- code, sent and retried by a background worker, kept as a delivery record.
CREATE TABLE courier (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address         TEXT NOT NULL,             -- normalised phone number or e-mail address
    appid           TEXT NOT NULL,
    otp_hash        BYTEA NOT NULL,            -- the challenge delivered; a final failure deletes exactly it
    sealed          BYTEA,                     -- code and text, encrypted with a key not in the database; NULL once final
    status          TEXT NOT NULL,             -- queued, sent, failed, or cancelled (code used, replaced or expired)
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,                      -- the last failure, for operators; never credentials
    next_attempt_ms BIGINT NOT NULL,           -- also a lease while an attempt runs
    expires_at      BIGINT NOT NULL,           -- the code's expiry, after which retrying is pointless
    created_at      BIGINT NOT NULL
);

CREATE INDEX courier_queued ON courier (status, next_attempt_ms);
