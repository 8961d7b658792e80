//! The audit trail: security events per address (by its phone hash), kept for
//! `AUDIT_RETENTION_DAYS` and read by operators.

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use crate::store::{Db, StorageError};

/// A login completed; the detail is the app.
pub const LOGIN: &str = "login";
/// A verify with a wrong code, or without a pending one; the detail is the error code.
pub const LOGIN_FAILED: &str = "login_failed";
/// The wrong guess that used up a code's attempts.
pub const LOCKED_OUT: &str = "locked_out";
/// A code that could not be delivered, for good; the detail is the sender.
pub const DELIVERY_FAILED: &str = "delivery_failed";
/// An operator ended sessions; the detail is how many.
pub const SESSIONS_REVOKED: &str = "sessions_revoked";
/// The account was deleted; the detail says by whom (`user` or `operator`).
pub const ACCOUNT_DELETED: &str = "account_deleted";
/// An address was linked to an account; the detail is the other address, masked.
pub const ADDRESS_LINKED: &str = "address_linked";
/// A linked address was unlinked; the detail is the other address, masked.
pub const ADDRESS_UNLINKED: &str = "address_unlinked";

/// A request to the operator API without its token, or with another; the detail is the
/// client IP and which (`no token` or `wrong token`), never what was presented.
pub const OPERATOR_AUTH_FAILED: &str = "operator_auth_failed";
/// The trail the operator API's own events are kept under, in place of an address.
pub const OPERATOR_TRAIL: &str = "operator-api";

/// Most events one read answers, newest first.
pub const MAX_EVENTS: i64 = 1000;

pub(in crate::store) fn record(conn: &Connection, address_hash: i64, event: &str, detail: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO audit_events (at, address_hash, event, detail) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        now,
        address_hash,
        event,
        detail
    ])?;
    Ok(())
}

/// One event as operators read it.
pub(in crate::store) fn entry(at: i64, event: String, detail: String) -> Value {
    json!({ "at": at, "event": event, "detail": detail })
}

fn read(conn: &Connection, address_hash: i64) -> rusqlite::Result<Vec<Value>> {
    let mut query =
        conn.prepare_cached("SELECT at, event, detail FROM audit_events WHERE address_hash = ?1 ORDER BY at DESC, id DESC LIMIT ?2")?;
    let rows = query.query_map(params![address_hash, MAX_EVENTS], |r| Ok(entry(r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

impl Db {
    /// Records a security event of `address`.
    pub async fn audit(&self, address: &str, event: &'static str, detail: String) -> Result<(), StorageError> {
        let (address_hash, now) = (self.phone_hash(address), self.clock().now());
        if let Some(pg) = self.postgres() {
            return pg.audit(address_hash, event, detail, now).await;
        }
        self.call(move |conn| record(conn, address_hash, event, &detail, now)).await
    }

    /// The events of `address`, newest first, at most [`MAX_EVENTS`].
    pub async fn audit_events(&self, address: &str) -> Result<Vec<Value>, StorageError> {
        let address_hash = self.phone_hash(address);
        if let Some(pg) = self.postgres() {
            return pg.audit_events(address_hash).await;
        }
        self.call(move |conn| read(conn, address_hash)).await
    }

    /// Deletes the events older than `before` (unix seconds); returns how many.
    pub async fn purge_audit(&self, before: i64) -> Result<usize, StorageError> {
        if let Some(pg) = self.postgres() {
            return pg.purge_audit(before).await;
        }
        self.call(move |conn| conn.prepare_cached("DELETE FROM audit_events WHERE at < ?1")?.execute([before])).await
    }
}
