-- How many contacts each user keeps, changed with their address book in the same
-- transaction, so that admitting an upload does not count the whole book.
ALTER TABLE users ADD COLUMN contact_count BIGINT NOT NULL DEFAULT 0;
UPDATE users SET contact_count = c.n
    FROM (SELECT owner_id, count(*) AS n FROM contacts GROUP BY owner_id) AS c
    WHERE users.id = c.owner_id;
