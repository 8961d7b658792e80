-- Security events per address, for operators (GET /admin/events), kept
-- AUDIT_RETENTION_DAYS. Keyed by the address's phone hash: a failed login on a
-- number that never became a user leaves no number in clear.
CREATE TABLE audit_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,           -- unix seconds
    address_hash BIGINT NOT NULL,           -- the phone hash of the address
    event        TEXT NOT NULL,             -- login, login_failed, locked_out, delivery_failed, sessions_revoked, account_deleted
    detail       TEXT NOT NULL DEFAULT ''   -- the app, the reason or the sender; never a code or token
);
CREATE INDEX audit_events_address ON audit_events (address_hash, at);
CREATE INDEX audit_events_at ON audit_events (at);
