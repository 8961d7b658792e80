//! The notification outbox, taken with `SKIP LOCKED` so no two senders take one notice (see `store::outbox`).

use crate::store::error::StorageError;
use crate::store::records::{userdel_payload, Pending, USERDEL};

use super::{counter, execute, int, query_opt, PgStore, Retry, Session};

impl PgStore {
    /// The next due notice, leased for `lease_secs` so no other sender takes it meanwhile.
    /// A notice another instance is taking at this moment is skipped, not waited for.
    pub async fn take_next_notice(&self, now: i64, lease_secs: i64) -> Result<Option<Pending>, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let row = query_opt(
                &client,
                "UPDATE outbox SET next_attempt_at = $2 WHERE id =
                     (SELECT id FROM outbox WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, recipient, payload, attempts, kind",
                &[&now, &(now + lease_secs)],
            )
            .await?;
            Ok(match row {
                Some(r) => Some(Pending {
                    id: r.try_get(0)?,
                    recipient: r.try_get(1)?,
                    payload: r.try_get(2)?,
                    attempts: counter(r.try_get(3)?),
                    kind: r.try_get(4)?,
                }),
                None => None,
            })
        })
        .await
    }

    /// Upstream took the notice: it is never sent again.
    pub async fn acknowledge_notice(&self, id: i64) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| async move {
            execute(&client, "DELETE FROM outbox WHERE id = $1", &[&id]).await?;
            Ok(())
        })
        .await
    }

    /// A failed send: try again at `next_attempt_at` (unix seconds).
    pub async fn reschedule_notice(&self, id: i64, attempts: u32, next_attempt_at: i64, error: String) -> Result<(), StorageError> {
        let (attempts, error) = (int(attempts), error.as_str());
        self.retrying(Retry::Always, |client| async move {
            execute(
                &client,
                "UPDATE outbox SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1",
                &[&id, &attempts, &next_attempt_at, &error],
            )
            .await?;
            Ok(())
        })
        .await
    }
}

/// Queues the platform's `userdel` of the user `uid` at `address`.
pub(super) async fn queue_userdel(tx: &impl Session, address: &str, uid: &str, now: i64) -> Result<(), StorageError> {
    execute(
        tx,
        "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at, kind) VALUES ($1, $2, $3, $3, $4)",
        &[&address, &userdel_payload(uid), &now, &USERDEL],
    )
    .await?;
    Ok(())
}
