//! The contacts table: the phones each user uploaded from their address book (not
//! necessarily users), kept as keyed hashes (see `PhoneHasher`), and the sync queries
//! over it.

use rusqlite::{params, Connection};

use crate::domain::account::Profile;
use crate::domain::error::ApiError;
use crate::domain::ratelimit::Admission;
use crate::store::users::{profile_from_row, PROFILE_COLUMNS};
use crate::store::{self, Db, StorageError};

/// Most entries in one reply; the rest follow with a cursor.
pub const PAGE_SIZE: usize = 1000;

pub struct SyncQuery {
    pub owner: i64,
    /// Uploaded phones: answer those that are users, whatever their ts.
    pub phones: Option<String>,
    pub since: i64,
    pub reset: bool,
    /// The (ts, address) of the last entry already sent.
    pub after: Option<(i64, String)>,
    pub now: i64,
}

/// Records uploaded phones as contacts and returns one page of matching users
/// (never the caller), ordered by (ts, address), plus whether more follow. `hashes` is
/// the JSON array of the uploaded phones' hashes. `admit` sees how many uploaded phones
/// are not yet contacts and how many contacts the upload leaves, before anything is written.
pub(in crate::store) fn sync(
    conn: &mut Connection,
    q: &SyncQuery,
    hashes: &str,
    admit: impl FnOnce(usize, usize) -> Result<(), ApiError>,
) -> rusqlite::Result<Result<(Vec<Profile>, bool), ApiError>> {
    let page = store::atomically(conn, |tx| {
        if q.phones.is_some() {
            // Known before a reset stays known: uploading the same book again costs nothing.
            let (stored, uploaded, new): (usize, usize, usize) = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM contacts WHERE owner_id = ?1), count(*),
                        count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = ?1 AND c.phone_hash = j.value))
                     FROM json_each(?2) j",
                )?
                .query_row(params![q.owner, hashes], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let after = if q.reset { uploaded } else { stored + new };
            if let Err(refused) = admit(new, after) {
                return Ok(Err(refused));
            }
        }
        if q.reset {
            tx.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1")?.execute([q.owner])?;
        }
        if q.phones.is_some() {
            tx.prepare_cached("INSERT OR IGNORE INTO contacts (owner_id, phone_hash) SELECT ?1, value FROM json_each(?2)")?
                .execute(params![q.owner, hashes])?;
        }
        Ok(Ok(matching_users(tx, q)?))
    })?;
    Ok(page.map(page_and_more))
}

/// One page of the users `q` asks for, with one entry more when more follow: the
/// uploaded phones that are users, or else the caller's contacts changed since `q.since`.
fn matching_users(conn: &Connection, q: &SyncQuery) -> rusqlite::Result<Vec<Profile>> {
    let (after_ts, after_address) = q.after.as_ref().map_or((i64::MIN, ""), |(ts, address)| (*ts, address.as_str()));
    let limit = PAGE_SIZE as i64 + 1;
    match &q.phones {
        Some(phones) => {
            let mut query = conn.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM users u WHERE u.address IN (SELECT value FROM json_each(?1))
                 AND u.id <> ?2 AND (u.ts, u.address) > (?3, ?4) ORDER BY u.ts, u.address LIMIT ?5"
            ))?;
            let rows = query.query_map(params![phones, q.owner, after_ts, after_address, limit], profile_from_row)?;
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

/// The phones of a JSON array of strings, as the service layer passes them.
pub(in crate::store) fn phone_list(json: &str) -> Result<Vec<String>, StorageError> {
    serde_json::from_str(json).map_err(|e| StorageError::Thread(format!("phones is not a JSON array of strings: {e}")))
}

/// Removes phones from a user's contacts; `hashes` is the JSON array of their hashes.
/// Returns how many were there.
pub(in crate::store) fn remove(conn: &mut Connection, owner: i64, hashes: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1 AND phone_hash IN (SELECT value FROM json_each(?2))")?
        .execute(params![owner, hashes])
}

impl Db {
    /// Records uploaded phones and answers a page of the caller's contacts (see [`sync`]).
    /// A sync that only reads runs on the writer too: the readers' page caches start
    /// cold whenever the writer committed, which made it several times slower.
    pub async fn sync_contacts(
        &self,
        query: SyncQuery,
        admit: impl FnOnce(usize, usize) -> Admission<ApiError> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), ApiError>, StorageError> {
        let phones = query.phones.as_deref().map(phone_list).transpose()?;
        let hashes = self.phone_hashes(phones.iter().flatten());
        if let Some(pg) = self.postgres() {
            return pg.sync_contacts(query, phones, hashes, admit).await;
        }
        let hashes = serde_json::to_string(&hashes).expect("integers serialise");
        let runtime = tokio::runtime::Handle::current();
        self.call(move |conn| sync(conn, &query, &hashes, |new, after| store::admitted(&runtime, admit(new, after)))).await
    }

    /// Removes phones (a JSON array) from a user's contacts; returns how many were there.
    pub async fn remove_contacts(&self, owner: i64, phones_json: String) -> Result<usize, StorageError> {
        let hashes = self.phone_hashes(&phone_list(&phones_json)?);
        if let Some(pg) = self.postgres() {
            return pg.remove_contacts(owner, hashes).await;
        }
        let hashes = serde_json::to_string(&hashes).expect("integers serialise");
        self.call(move |conn| remove(conn, owner, &hashes)).await
    }

    /// The hashes the phones of `phones_json` (a JSON array of strings) are stored as.
    fn phone_hashes<'a>(&self, phones: impl IntoIterator<Item = &'a String>) -> Vec<i64> {
        phones.into_iter().map(|phone| self.phones.hash(phone)).collect()
    }

    /// The hash a phone is stored as in address books, and a user's address is matched by.
    pub fn phone_hash(&self, phone: &str) -> i64 {
        self.phones.hash(phone)
    }
}
