//! The audit trail (see `store::audit`).

use crate::store::error::StorageError;
use crate::store::records::{AuditEvent, MAX_EVENTS};

use super::{execute, query, rows, PgStore, Retry};

impl PgStore {
    /// Records a security event (see `store::audit`).
    pub async fn audit(&self, address_hash: i64, event: &'static str, detail: String, now: i64) -> Result<(), StorageError> {
        let detail = detail.as_str();
        self.retrying(Retry::IfNotApplied, |client| async move {
            execute(
                &client,
                "INSERT INTO audit_events (at, address_hash, event, detail) VALUES ($1, $2, $3, $4)",
                &[&now, &address_hash, &event, &detail],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The events of an address (by its phone hash), newest first.
    pub async fn audit_events(&self, address_hash: i64) -> Result<Vec<AuditEvent>, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let found = query(
                &client,
                "SELECT at, event, detail FROM audit_events WHERE address_hash = $1 ORDER BY at DESC, id DESC LIMIT $2",
                &[&address_hash, &MAX_EVENTS],
            )
            .await?;
            let entries = found.iter().map(|r| Ok(AuditEvent { at: r.try_get(0)?, event: r.try_get(1)?, detail: r.try_get(2)? }));
            Ok(entries.collect::<Result<_, tokio_postgres::Error>>()?)
        })
        .await
    }

    /// Deletes the events older than `before`; returns how many.
    pub async fn purge_audit(&self, before: i64) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            Ok(rows(execute(&client, "DELETE FROM audit_events WHERE at < $1", &[&before]).await?))
        })
        .await
    }
}
