//! The contacts table: the phones each user uploaded from their address book (not
//! necessarily users), and the sync queries over it.

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
/// (never the caller), ordered by (ts, address), plus whether more follow. `admit`
/// sees how many uploaded phones are not yet contacts and how many contacts the
/// upload leaves, before anything is written.
pub(in crate::store) fn sync(
    conn: &mut Connection,
    q: &SyncQuery,
    admit: impl FnOnce(usize, usize) -> Result<(), ApiError>,
) -> rusqlite::Result<Result<(Vec<Profile>, bool), ApiError>> {
    let page = store::atomically(conn, |tx| {
        if let Some(phones) = &q.phones {
            // Known before a reset stays known: uploading the same book again costs nothing.
            let (stored, uploaded, new): (usize, usize, usize) = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM contacts WHERE owner_id = ?1), count(*),
                        count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = ?1 AND c.phone = j.value))
                     FROM json_each(?2) j",
                )?
                .query_row(params![q.owner, phones], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let after = if q.reset { uploaded } else { stored + new };
            if let Err(refused) = admit(new, after) {
                return Ok(Err(refused));
            }
        }
        if q.reset {
            tx.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1")?.execute([q.owner])?;
        }
        if let Some(phones) = &q.phones {
            tx.prepare_cached("INSERT OR IGNORE INTO contacts (owner_id, phone, added_at) SELECT ?1, value, ?2 FROM json_each(?3)")?
                .execute(params![q.owner, q.now, phones])?;
        }
        let (after_ts, after_address) = q.after.as_ref().map_or((i64::MIN, ""), |(ts, address)| (*ts, address.as_str()));
        let limit = PAGE_SIZE as i64 + 1;
        let page = match &q.phones {
            Some(phones) => {
                let mut query = tx.prepare_cached(&format!(
                    "SELECT {PROFILE_COLUMNS} FROM users u WHERE u.address IN (SELECT value FROM json_each(?1))
                 AND u.id <> ?2 AND (u.ts, u.address) > (?3, ?4) ORDER BY u.ts, u.address LIMIT ?5"
                ))?;
                let rows = query.query_map(params![phones, q.owner, after_ts, after_address, limit], profile_from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
            None => {
                let mut query = tx.prepare_cached(&format!(
                    "SELECT {PROFILE_COLUMNS} FROM contacts c JOIN users u ON u.address = c.phone
                 WHERE c.owner_id = ?1 AND u.id <> ?1 AND u.ts >= ?2 AND (u.ts, u.address) > (?3, ?4)
                 ORDER BY u.ts, u.address LIMIT ?5"
                ))?;
                let rows = query.query_map(params![q.owner, q.since, after_ts, after_address, limit], profile_from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        Ok(Ok(page))
    })?;
    Ok(page.map(|mut page| {
        let more = page.len() > PAGE_SIZE;
        page.truncate(PAGE_SIZE);
        (page, more)
    }))
}

/// Removes phones from a user's contacts; returns how many were there.
pub(in crate::store) fn remove(conn: &mut Connection, owner: i64, phones_json: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1 AND phone IN (SELECT value FROM json_each(?2))")?
        .execute(params![owner, phones_json])
}

impl Db {
    /// Records uploaded phones and answers a page of the caller's contacts (see [`sync`]).
    pub async fn sync_contacts(
        &self,
        query: SyncQuery,
        admit: impl FnOnce(usize, usize) -> Admission<ApiError> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), ApiError>, StorageError> {
        if let Some(pg) = self.postgres() {
            return pg.sync_contacts(query, admit).await;
        }
        let runtime = tokio::runtime::Handle::current();
        self.call(move |conn| sync(conn, &query, |new, after| store::admitted(&runtime, admit(new, after)))).await
    }

    /// Removes phones (a JSON array) from a user's contacts; returns how many were there.
    pub async fn remove_contacts(&self, owner: i64, phones_json: String) -> Result<usize, StorageError> {
        if let Some(pg) = self.postgres() {
            return pg.remove_contacts(owner, phones_json).await;
        }
        self.call(move |conn| remove(conn, owner, &phones_json)).await
    }
}
