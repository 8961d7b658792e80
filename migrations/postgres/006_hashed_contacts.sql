-- Address books keep no phone number: each entry is a 64-bit keyed hash of the phone,
-- and users are matched by the same hash of their address. The key is not in the
-- database, so the service computes the hashes: right after this file, in the same
-- transaction, it fills users.address_hash, moves contacts_in_clear into contacts
-- hashed, drops contacts_in_clear and creates the indexes below.
ALTER TABLE contacts RENAME TO contacts_in_clear;
ALTER INDEX contacts_phone RENAME TO contacts_in_clear_phone;
ALTER TABLE contacts_in_clear RENAME CONSTRAINT contacts_pkey TO contacts_in_clear_pkey;

ALTER TABLE users ADD COLUMN address_hash BIGINT;     -- the phone hash of address

CREATE TABLE contacts (
    owner_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone_hash BIGINT NOT NULL,                        -- the phone hash of the contact's phone
    PRIMARY KEY (owner_id, phone_hash)
);
