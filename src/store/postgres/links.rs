//! Linked addresses (see `store::links`).

use crate::store::error::StorageError;
use crate::store::records::{link_outcome, LinkOutcome, LinkedAddress};

use super::outbox::queue_userdel;
use super::{execute, query, query_opt, rows, PgStore, Retry};

impl PgStore {
    /// Links an address (see `store::links`).
    pub async fn link_address(
        &self,
        user_id: i64,
        address: &str,
        claimed_code: Option<[u8; 32]>,
        now: i64,
    ) -> Result<LinkOutcome, StorageError> {
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            // Two links of one address wait for each other, instead of one failing on the key.
            execute(&tx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&address]).await?;
            let owner: Option<i64> =
                query_opt(&tx, "SELECT id FROM users WHERE address = $1", &[&address]).await?.map(|r| r.try_get(0)).transpose()?;
            let linked: Option<i64> = query_opt(&tx, "SELECT user_id FROM linked_addresses WHERE address = $1", &[&address])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            let outcome = link_outcome(user_id, owner, linked);
            if outcome == LinkOutcome::Linked {
                execute(&tx, "INSERT INTO linked_addresses (address, user_id, linked_at) VALUES ($1, $2, $3)", &[&address, &user_id, &now])
                    .await?;
            }
            if matches!(outcome, LinkOutcome::Linked | LinkOutcome::AlreadyLinked) {
                if let Some(otp_hash) = claimed_code {
                    let hash: &[u8] = &otp_hash;
                    execute(&tx, "DELETE FROM otp_challenges WHERE address = $1 AND otp_hash = $2", &[&address, &hash]).await?;
                }
            }
            tx.commit().await?;
            Ok(outcome)
        })
        .await
    }

    /// Unlinks an address (see `store::links`).
    pub async fn unlink_address(&self, user_id: i64, address: &str, now: i64) -> Result<Option<usize>, StorageError> {
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            let removed =
                query_opt(&tx, "DELETE FROM linked_addresses WHERE address = $1 AND user_id = $2 RETURNING uid", &[&address, &user_id])
                    .await?;
            let Some(removed) = removed else { return Ok(None) };
            let uid: String = removed.try_get(0)?;
            let ended = execute(&tx, "DELETE FROM sessions WHERE user_id = $1 AND via = $2", &[&user_id, &address]).await?;
            if !uid.is_empty() {
                queue_userdel(&tx, address, &uid, now).await?;
            }
            tx.commit().await?;
            Ok(Some(rows(ended)))
        })
        .await
    }

    /// A user's linked addresses, oldest first.
    pub async fn linked_addresses(&self, user_id: i64) -> Result<Vec<LinkedAddress>, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let found = query(
                &client,
                "SELECT address, linked_at FROM linked_addresses WHERE user_id = $1 ORDER BY linked_at, address",
                &[&user_id],
            )
            .await?;
            Ok(found
                .iter()
                .map(|r| Ok(LinkedAddress { address: r.try_get(0)?, linked_at: r.try_get(1)? }))
                .collect::<Result<_, tokio_postgres::Error>>()?)
        })
        .await
    }

    /// The user a linked address belongs to, and that user's own address.
    pub async fn link_holder(&self, address: &str) -> Result<Option<(i64, String)>, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let found = query_opt(
                &client,
                "SELECT u.id, u.address FROM linked_addresses l JOIN users u ON u.id = l.user_id WHERE l.address = $1",
                &[&address],
            )
            .await?;
            Ok(found.map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?))).transpose()?)
        })
        .await
    }
}
