-- Further addresses of a user, each proven while signed in: a login through one of
-- them is the same user, its token minted with linkto = the user's own address.
CREATE TABLE linked_addresses (
    address   TEXT PRIMARY KEY,            -- normalised phone, e-mail address or provider:subject
    user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    uid       TEXT NOT NULL DEFAULT '',    -- the platform's user id of this address, once a login through it got one
    linked_at BIGINT NOT NULL              -- unix seconds
);
CREATE INDEX linked_addresses_user ON linked_addresses (user_id);
-- The linked address a session logged in through, ended with it; '' for the user's own.
ALTER TABLE sessions ADD COLUMN via TEXT NOT NULL DEFAULT '';
