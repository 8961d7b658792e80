//! The outbox table: upstream messages waiting to be sent, written in the transaction
//! that causes them (see `delivery::outbox` for their sender).

use rusqlite::{params, Connection};
use serde_json::json;

/// Queues a `contact_joined` notice for every user who has `phone` as a contact.
/// Call inside the transaction that creates the user; returns how many were queued.
pub fn enqueue_contact_joined(conn: &Connection, user_id: i64, phone: &str, name: &str, now: i64) -> rusqlite::Result<usize> {
    let payload = json!({ "type": "contact_joined", "phone": phone, "name": name }).to_string();
    conn.prepare_cached(
        "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
         SELECT u.address, ?3, ?4, ?4 FROM contacts c JOIN users u ON u.id = c.owner_id
         WHERE c.phone = ?2 AND u.id <> ?1 ORDER BY u.id",
    )?
    .execute(params![user_id, phone, payload, now])
}
