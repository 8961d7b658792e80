//! The outbox table: upstream messages waiting to be sent, written in the transaction
//! that causes them (see `delivery::outbox` for their sender).

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::error::StorageError;
use crate::store::records::{userdel_payload, Pending, USERDEL};

use super::SqliteStore;

/// Queues the payload `payload` builds for every user who has user `user_id`'s phone as
/// a contact, built only when there is one (most new users are nobody's contact yet).
/// Call inside the transaction that causes it; returns how many were queued.
pub(in crate::store) fn enqueue_for_contact_holders(
    conn: &Connection,
    user_id: i64,
    payload: impl FnOnce() -> String,
    now: i64,
) -> rusqlite::Result<usize> {
    let recipients = conn
        .prepare_cached(
            "SELECT u.address FROM contacts c JOIN users u ON u.id = c.owner_id
             WHERE c.phone_hash = (SELECT address_hash FROM users WHERE id = ?1) AND u.id <> ?1 ORDER BY u.id",
        )?
        .query_map([user_id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    if recipients.is_empty() {
        return Ok(0);
    }
    let payload = payload();
    let mut insert = conn.prepare_cached("INSERT INTO outbox (recipient, payload, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?3)")?;
    for recipient in &recipients {
        insert.execute(params![recipient, payload, now])?;
    }
    Ok(recipients.len())
}

/// Queues each (recipient, payload). Call inside the transaction that causes them.
pub(in crate::store) fn enqueue_each(conn: &Connection, notices: &[(String, String)], now: i64) -> rusqlite::Result<usize> {
    let mut insert = conn.prepare_cached("INSERT INTO outbox (recipient, payload, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?3)")?;
    for (recipient, payload) in notices {
        insert.execute(params![recipient, payload, now])?;
    }
    Ok(notices.len())
}

/// Queues the platform's `userdel` of the user `uid` at `address`.
pub(in crate::store) fn queue_userdel(conn: &Connection, address: &str, uid: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at, kind) VALUES (?1, ?2, ?3, ?3, ?4)",
        params![address, userdel_payload(uid), now, USERDEL],
    )?;
    Ok(())
}

/// Takes the next due message and leases it for `lease_secs`, so no other sender takes it meanwhile.
fn take_next_due(conn: &mut Connection, now: i64, lease_secs: i64) -> rusqlite::Result<Option<Pending>> {
    conn.prepare_cached(
        "UPDATE outbox SET next_attempt_at = ?2 WHERE id =
             (SELECT id FROM outbox WHERE next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT 1)
         RETURNING id, recipient, payload, attempts, kind",
    )?
    .query_row(params![now, now + lease_secs], |r| {
        Ok(Pending { id: r.get(0)?, recipient: r.get(1)?, payload: r.get(2)?, attempts: r.get(3)?, kind: r.get(4)? })
    })
    .optional()
}

impl SqliteStore {
    /// The next due notice, leased for `lease_secs` so no other sender takes it meanwhile.
    pub async fn take_next_notice(&self, now: i64, lease_secs: i64) -> Result<Option<Pending>, StorageError> {
        self.call(move |conn| take_next_due(conn, now, lease_secs)).await
    }

    /// Upstream took the notice: it is never sent again.
    pub async fn acknowledge_notice(&self, id: i64) -> Result<(), StorageError> {
        self.call(move |conn| conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?.execute([id]).map(|_| ())).await
    }

    /// A failed send: try again at `next_attempt_at` (unix seconds).
    pub async fn reschedule_notice(&self, id: i64, attempts: u32, next_attempt_at: i64, error: String) -> Result<(), StorageError> {
        self.call(move |conn| {
            conn.prepare_cached("UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1")?
                .execute(params![id, attempts, next_attempt_at, error])
                .map(|_| ())
        })
        .await
    }
}
