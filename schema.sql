-- otpgate database schema. Applied at every start; every statement is idempotent.

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

-- Server-side values that must survive restarts (e.g. the generated OTP hashing key).
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
    otp             TEXT,                     -- the code, for senders that need it apart; NULL once sent or failed
    body            TEXT,                     -- the rendered message; NULL once sent or failed
    status          TEXT NOT NULL,            -- queued, sent, failed, or cancelled (code used, replaced or expired)
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,                     -- the last failure, for operators; never credentials
    next_attempt_ms INTEGER NOT NULL,         -- unix milliseconds; also a lease while an attempt runs
    expires_at      INTEGER NOT NULL,         -- unix seconds: the code's expiry, after which retrying is pointless
    created_at      INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS courier_queued ON courier (status, next_attempt_ms);
