//! The contacts table: the phones each user uploaded from their address book (not
//! necessarily users), kept as keyed hashes (see `PhoneHasher`), and the sync queries
//! over it.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::account::Profile;
use crate::domain::ratelimit::Admission;
use crate::store::error::StorageError;
use crate::store::records::{SyncQuery, PAGE_SIZE};

use super::users::{profile_from_row, PROFILE_COLUMNS};
use super::{admitted, atomically, atomically_unless_refused, SqliteStore};

/// An upload as the SQLite queries read it: JSON arrays of the phones and of their hashes.
pub(in crate::store) struct Upload {
    pub phones: String,
    pub hashes: String,
    /// How many phones (and hashes) there are.
    pub count: usize,
}

/// Records uploaded phones as contacts and returns one page of matching users
/// (never the caller), ordered by (ts, address), plus whether more follow. `admit` sees
/// how many uploaded phones are not yet contacts and how many contacts the upload
/// leaves; a refusal leaves nothing written. Each user's `contact_count` changes with
/// their contacts, so admission never counts the whole book.
pub(in crate::store) fn sync<Refused>(
    conn: &mut Connection,
    q: &SyncQuery,
    upload: Option<&Upload>,
    admit: impl FnOnce(usize, usize) -> Result<(), Refused>,
) -> rusqlite::Result<Result<(Vec<Profile>, bool), Refused>> {
    let page = atomically_unless_refused(conn, |tx| {
        let insert = |upload: &Upload| {
            tx.prepare_cached("INSERT OR IGNORE INTO contacts (owner_id, phone_hash) SELECT ?1, value FROM json_each(?2)")?
                .execute(params![q.owner, upload.hashes])
        };
        let (added, removed) = if q.reset {
            if let Some(upload) = upload {
                // Known before a reset stays known: uploading the same book again costs nothing.
                let new: usize = tx
                    .prepare_cached(
                        "SELECT count(*) FROM json_each(?2) j
                         WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = ?1 AND c.phone_hash = j.value)",
                    )?
                    .query_row(params![q.owner, upload.hashes], |r| r.get(0))?;
                if let Err(refused) = admit(new, upload.count) {
                    return Ok(Err(refused));
                }
            }
            let removed = tx.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1")?.execute([q.owner])?;
            (upload.map(insert).transpose()?.unwrap_or(0), removed)
        } else if let Some(upload) = upload {
            // The insert finds which phones are new; a refusal rolls it back.
            let added = insert(upload)?;
            let stored: usize = tx
                .prepare_cached("SELECT contact_count FROM users WHERE id = ?1")?
                .query_row([q.owner], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if let Err(refused) = admit(added, stored + added) {
                return Ok(Err(refused));
            }
            (added, 0)
        } else {
            (0, 0)
        };
        count_contacts(tx, q.owner, added, removed)?;
        Ok(Ok(matching_users(tx, q, upload)?))
    })?;
    Ok(page.map(page_and_more))
}

/// Keeps the owner's `contact_count` equal to their contacts after `added` were inserted
/// and `removed` deleted.
fn count_contacts(conn: &Connection, owner: i64, added: usize, removed: usize) -> rusqlite::Result<()> {
    if added != removed {
        let change = i64::try_from(added).unwrap_or(i64::MAX) - i64::try_from(removed).unwrap_or(i64::MAX);
        conn.prepare_cached("UPDATE users SET contact_count = contact_count + ?2 WHERE id = ?1")?.execute(params![owner, change])?;
    }
    Ok(())
}

/// One page of the users `q` asks for, with one entry more when more follow: the
/// uploaded phones that are users, or else the caller's contacts changed since `q.since`.
fn matching_users(conn: &Connection, q: &SyncQuery, upload: Option<&Upload>) -> rusqlite::Result<Vec<Profile>> {
    let (after_ts, after_address) = q.after.as_ref().map_or((i64::MIN, ""), |(ts, address)| (*ts, address.as_str()));
    let limit = PAGE_SIZE as i64 + 1;
    match upload {
        Some(upload) => {
            let mut query = conn.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM users u WHERE u.address IN (SELECT value FROM json_each(?1))
                 AND u.id <> ?2 AND (u.ts, u.address) > (?3, ?4) ORDER BY u.ts, u.address LIMIT ?5"
            ))?;
            let rows = query.query_map(params![upload.phones, q.owner, after_ts, after_address, limit], profile_from_row)?;
            rows.collect()
        }
        None => {
            let mut query = conn.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM contacts c JOIN users u ON u.address_hash = c.phone_hash
                 WHERE c.owner_id = ?1 AND u.id <> ?1 AND u.ts >= ?2 AND (u.ts, u.address) > (?3, ?4)
                 ORDER BY u.ts, u.address LIMIT ?5"
            ))?;
            let rows = query.query_map(params![q.owner, q.since, after_ts, after_address, limit], profile_from_row)?;
            rows.collect()
        }
    }
}

/// Cuts a page of up to `PAGE_SIZE + 1` entries to `PAGE_SIZE`, saying whether more follow.
pub(in crate::store) fn page_and_more(mut page: Vec<Profile>) -> (Vec<Profile>, bool) {
    let more = page.len() > PAGE_SIZE;
    page.truncate(PAGE_SIZE);
    (page, more)
}

/// Removes phones from a user's contacts; `hashes` is the JSON array of their hashes.
/// Returns how many were there.
pub(in crate::store) fn remove(conn: &mut Connection, owner: i64, hashes: &str) -> rusqlite::Result<usize> {
    atomically(conn, |tx| {
        let removed = tx
            .prepare_cached("DELETE FROM contacts WHERE owner_id = ?1 AND phone_hash IN (SELECT value FROM json_each(?2))")?
            .execute(params![owner, hashes])?;
        count_contacts(tx, owner, 0, removed)?;
        Ok(removed)
    })
}

impl SqliteStore {
    /// Records uploaded phones, whose hashes are `hashes`, and answers a page of the
    /// caller's contacts (see [`sync`]).
    pub async fn sync_contacts<Refused: Send + 'static>(
        &self,
        q: SyncQuery,
        hashes: Vec<i64>,
        admit: impl FnOnce(usize, usize) -> Admission<Refused> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), Refused>, StorageError> {
        let upload = q.phones.as_ref().map(|phones| Upload {
            phones: serde_json::to_string(phones).expect("strings serialise"),
            hashes: serde_json::to_string(&hashes).expect("integers serialise"),
            count: hashes.len(),
        });
        let runtime = tokio::runtime::Handle::current();
        self.call(move |conn| sync(conn, &q, upload.as_ref(), |new, after| admitted(&runtime, admit(new, after)))).await
    }

    /// Removes phones, given by their hashes, from a user's contacts; returns how many were there.
    pub async fn remove_contacts(&self, owner: i64, hashes: Vec<i64>) -> Result<usize, StorageError> {
        let hashes = serde_json::to_string(&hashes).expect("integers serialise");
        self.call(move |conn| remove(conn, owner, &hashes)).await
    }
}
