//! The audit trail: security events per address (by its phone hash), kept for
//! `AUDIT_RETENTION_DAYS` and read by operators.

use rusqlite::{params, Connection};

use crate::store::error::StorageError;
use crate::store::records::{AuditEvent, MAX_EVENTS};

use super::SqliteStore;

pub(in crate::store) fn record(conn: &Connection, address_hash: i64, event: &str, detail: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO audit_events (at, address_hash, event, detail) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        now,
        address_hash,
        event,
        detail
    ])?;
    Ok(())
}

fn read(conn: &Connection, address_hash: i64) -> rusqlite::Result<Vec<AuditEvent>> {
    let mut query =
        conn.prepare_cached("SELECT at, event, detail FROM audit_events WHERE address_hash = ?1 ORDER BY at DESC, id DESC LIMIT ?2")?;
    let rows =
        query.query_map(params![address_hash, MAX_EVENTS], |r| Ok(AuditEvent { at: r.get(0)?, event: r.get(1)?, detail: r.get(2)? }))?;
    rows.collect()
}

impl SqliteStore {
    /// Records a security event of the address whose phone hash is `address_hash`.
    pub async fn audit(&self, address_hash: i64, event: &'static str, detail: String, now: i64) -> Result<(), StorageError> {
        self.call(move |conn| record(conn, address_hash, event, &detail, now)).await
    }

    /// The events of an address (by its phone hash), newest first.
    pub async fn audit_events(&self, address_hash: i64) -> Result<Vec<AuditEvent>, StorageError> {
        self.call(move |conn| read(conn, address_hash)).await
    }

    /// Deletes the events older than `before`; returns how many.
    pub async fn purge_audit(&self, before: i64) -> Result<usize, StorageError> {
        self.call(move |conn| conn.prepare_cached("DELETE FROM audit_events WHERE at < ?1")?.execute([before])).await
    }
}
