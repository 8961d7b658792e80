//! Code messages: queued with their code, claimed by one courier at a time (see `store::courier`).

use crate::domain::address::Address;
use crate::domain::keys::MessageSeal;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::error::StorageError;
use crate::store::records::{
    open_message, receipt_change, AttemptOutcome, Claimed, DeliveryReceipt, Enqueued, NewChallenge, QueuedMessage, ReceiptOutcome,
    ReceiptTarget, BATCH,
};

use super::{counter, execute, int, interrupted, query, query_one, query_opt, rows, Interrupted, Param, PgStore, Pipelined, Retry};

/// A pending code that may be sent again.
struct PendingCode {
    otp_hash: Vec<u8>,
    sealed: Vec<u8>,
    expires_at: i64,
}

/// The address's pending code, when a start asking for `channel` sends it again (see
/// `Db::enqueue_message`): valid for this app, unclaimed, not guessed at wrongly, still
/// sealed in a queued row or a sent one kept for resends, and last queued for another channel.
async fn pending_code_for_another_channel(tx: &Pipelined, c: &NewChallenge, channel: &str) -> Result<Option<PendingCode>, StorageError> {
    let row = tx
        .query_opt(
            "SELECT c.otp_hash, c.expires_at, m.sealed, m.channel FROM otp_challenges c
             CROSS JOIN LATERAL (SELECT sealed, channel FROM courier
                 WHERE address = c.address AND otp_hash = c.otp_hash AND sealed IS NOT NULL
                     AND (status = 'queued' OR (status = 'sent' AND expires_at > $3))
                 ORDER BY id DESC LIMIT 1) m
             WHERE c.address = $1 AND c.appid = $2 AND c.expires_at > $3 AND c.claimed_at IS NULL AND c.attempts = 0 AND c.bound_attempts = 0",
            &[&c.address, &c.appid, &c.now],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let last: Option<String> = row.try_get(3)?;
    if last.as_deref() == Some(channel) {
        return Ok(None);
    }
    Ok(Some(PendingCode { otp_hash: row.try_get(0)?, expires_at: row.try_get(1)?, sealed: row.try_get(2)? }))
}

impl PgStore {
    /// Stores the challenge and queues its sealed message `(address, appid, sealed,
    /// channel)` in one transaction, leased until `lease_until`, or sends the pending code
    /// again (see `Db::enqueue_message`); `admit` runs once the resend window allows a new
    /// code, before anything is written. An advisory lock on the address makes concurrent
    /// starts for it take turns, so the resend window holds across instances.
    pub async fn enqueue_message(
        &self,
        challenge: NewChallenge,
        message: (String, String, Vec<u8>, Option<String>),
        lease_until: i64,
        admit: impl FnOnce() -> Admission<Refusal> + Send + 'static,
    ) -> Result<Enqueued, StorageError> {
        let c = &challenge;
        let (address, appid, sealed, channel) = &message;
        let (mut admit, mut retried) = (Some(admit), false);
        loop {
            // Returning without a commit rolls the transaction back and releases the lock.
            let (tx, previous) = self.begin_retrying("SELECT otpgate_lock_code($1)", &[&c.address]).await?;
            if let Some(previous) = previous.map(|row| row.try_get::<_, Option<i64>>(0)).transpose()?.flatten() {
                let wait = previous + c.resend_secs - c.now;
                if wait > 0 {
                    return Ok(Enqueued::TooSoon(wait as u64));
                }
            }
            let pending = match channel {
                Some(channel) => self.timed(pending_code_for_another_channel(&tx, c, channel)).await?,
                None => None,
            };
            // Checked before anything is written: a refusal leaves the previous code valid.
            // Once: a start that runs again below was admitted already.
            if let Some(admit) = admit.take() {
                if let Err(refusal) = admit().await {
                    return Ok(Enqueued::Refused(refusal));
                }
            }
            let (otp_hash, challenge_sha256): (&[u8], &[u8]) = (&c.otp_hash, &c.challenge_sha256);
            let stored = match &pending {
                None => {
                    let expires_at = c.now + c.ttl_secs;
                    let params: &[&dyn Param] = &[
                        &c.address,
                        &c.appid,
                        &otp_hash,
                        &c.now,
                        &expires_at,
                        &challenge_sha256,
                        address,
                        appid,
                        sealed,
                        &lease_until,
                        channel,
                    ];
                    let stored = tx.query_one_and_commit(
                        "WITH challenge AS (
                             INSERT INTO otp_challenges (address, appid, otp_hash, created_at, expires_at, attempts, claimed_at, challenge_sha256, bound_attempts)
                             VALUES ($1, $2, $3, $4, $5, 0, NULL, $6, 0)
                             ON CONFLICT (address) DO UPDATE SET appid = excluded.appid, otp_hash = excluded.otp_hash,
                                 created_at = excluded.created_at, expires_at = excluded.expires_at, attempts = 0, claimed_at = NULL,
                                 challenge_sha256 = excluded.challenge_sha256, bound_attempts = 0)
                         INSERT INTO courier (address, appid, otp_hash, sealed, status, next_attempt_ms, expires_at, created_at, channel)
                         VALUES ($7, $8, $3, $9, 'queued', $10, $5, $4, $11) RETURNING id",
                        params,
                    );
                    self.timed(stored).await
                }
                Some(pending) => {
                    let params: &[&dyn Param] = &[
                        address,
                        appid,
                        &pending.otp_hash,
                        &c.now,
                        &challenge_sha256,
                        &pending.sealed,
                        &lease_until,
                        &pending.expires_at,
                        channel,
                    ];
                    let stored = tx.query_one_and_commit(
                        "WITH refreshed AS (UPDATE otp_challenges SET created_at = $4, challenge_sha256 = $5 WHERE address = $1),
                              superseded AS (UPDATE courier SET status = 'cancelled', last_error = 'sent again over another channel', sealed = NULL
                                  WHERE status = 'queued' AND address = $1 AND otp_hash = $3)
                         INSERT INTO courier (address, appid, otp_hash, sealed, status, next_attempt_ms, expires_at, created_at, channel)
                         VALUES ($1, $2, $3, $6, 'queued', $7, $8, $4, $9) RETURNING id",
                        params,
                    );
                    self.timed(stored).await
                }
            };
            match stored {
                Ok(row) => {
                    let id = row.try_get(0)?;
                    return Ok(match pending {
                        None => Enqueued::Stored(id),
                        Some(PendingCode { otp_hash, sealed, expires_at }) => Enqueued::Resent { id, otp_hash, sealed, expires_at },
                    });
                }
                // A demoted primary refuses the write (the lock it took): again on a fresh
                // connection, whose transaction checks the resend window anew. Only then:
                // after a connection lost at the COMMIT the code may be stored already, and
                // its message on its way; the client asks again.
                Err(e) if interrupted(&e) == Some(Interrupted::NotApplied) && !std::mem::replace(&mut retried, true) => {
                    tracing::info!("retrying on a fresh PostgreSQL connection after: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes up to [`BATCH`] due messages, leasing them until `lease_until`. Rows another
    /// instance is claiming are skipped, so no row is handed out twice. A message the key
    /// cannot open (the key changed since it was queued) fails for good.
    pub async fn claim_due_messages(&self, seal: MessageSeal, now_ms: i64, lease_until: i64) -> Result<Claimed, StorageError> {
        let seal = &seal;
        self.retrying(Retry::Always, |mut client| async move {
            let tx = client.transaction().await?;
            // A code that was used, replaced by a newer one or expired is not worth an SMS.
            execute(
                &tx,
                "UPDATE courier SET status = 'cancelled', last_error = 'code no longer valid (used, replaced or expired)', sealed = NULL
                 WHERE id IN (SELECT id FROM courier WHERE status = 'queued' AND NOT EXISTS (SELECT 1 FROM otp_challenges c
                     WHERE c.address = courier.address AND c.otp_hash = courier.otp_hash AND c.expires_at > $1) FOR UPDATE SKIP LOCKED)",
                &[&(now_ms / 1000)],
            )
            .await?;
            // Kept for a resend only while the code could still be used.
            execute(
                &tx,
                "UPDATE courier SET sealed = NULL WHERE id IN (SELECT id FROM courier
                     WHERE status = 'sent' AND sealed IS NOT NULL AND expires_at <= $1 FOR UPDATE SKIP LOCKED)",
                &[&(now_ms / 1000)],
            )
            .await?;
            let batch_size = i64::try_from(BATCH).unwrap_or(i64::MAX);
            let due = query(
                &tx,
                "SELECT id, address, appid, otp_hash, sealed, attempts, expires_at, failed_via, channel FROM courier
                 WHERE status = 'queued' AND next_attempt_ms <= $1 ORDER BY next_attempt_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&now_ms, &batch_size],
            )
            .await?;
            let mut batch = Vec::with_capacity(due.len());
            for r in &due {
                let mut row = QueuedMessage {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    appid: r.try_get(2)?,
                    otp_hash: r.try_get(3)?,
                    otp: String::new(),
                    body: String::new(),
                    attempts: counter(r.try_get(5)?),
                    expires_at: r.try_get(6)?,
                    failed_via: r.try_get(7)?,
                    channel: r.try_get(8)?,
                };
                let sealed: Option<Vec<u8>> = r.try_get(4)?;
                match sealed.and_then(|sealed| open_message(seal, &sealed, &row.address, &row.otp_hash)) {
                    Some((otp, body)) => {
                        (row.otp, row.body) = (otp, body);
                        batch.push(row);
                    }
                    None => {
                        let error = "the message cannot be decrypted: the server key changed since it was queued";
                        tracing::warn!(to = %Address::from_stored(&row.address).masked(), "code not delivered: {error}");
                        execute(
                            &tx,
                            "UPDATE courier SET status = 'failed', last_error = $2, sealed = NULL WHERE id = $1",
                            &[&row.id, &error],
                        )
                        .await?;
                        execute(&tx, "DELETE FROM otp_challenges WHERE address = $1 AND otp_hash = $2", &[&row.address, &row.otp_hash])
                            .await?;
                    }
                }
            }
            if !batch.is_empty() {
                let ids: Vec<i64> = batch.iter().map(|row| row.id).collect();
                execute(&tx, "UPDATE courier SET next_attempt_ms = $2 WHERE id = ANY($1)", &[&ids, &lease_until]).await?;
            }
            let left = query_one(&tx, "SELECT min(next_attempt_ms), count(*) FROM courier WHERE status = 'queued'", &[]).await?;
            let (next_due, queued) = (left.try_get(0)?, left.try_get(1)?);
            tx.commit().await?;
            Ok(Claimed { batch, next_due, queued })
        })
        .await
    }

    /// Records a delivery attempt. A final outcome wipes the sealed message; a final
    /// failure also deletes the challenge, since nobody received that code.
    pub async fn record_attempt(
        &self,
        id: i64,
        attempts: u32,
        outcome: AttemptOutcome,
        address: String,
        otp_hash: Vec<u8>,
    ) -> Result<(), StorageError> {
        let (outcome, address, otp_hash, attempts) = (&outcome, &address, &otp_hash, int(attempts));
        self.retrying(Retry::Always, |client| async move {
            // One statement each, so none needs a transaction of its own.
            match outcome {
                // Receipts describe the provider's message the row names: a new one has none yet.
                AttemptOutcome::Sent { instance, message_id, keep_sealed } => {
                    execute(
                        &client,
                        "UPDATE courier SET status = 'sent', attempts = $2, instance = $3, provider_message_id = $4,
                             sealed = CASE WHEN $5 THEN sealed END, receipt_status = NULL, receipt_error = NULL, receipt_at = NULL
                         WHERE id = $1",
                        &[&id, &attempts, instance, message_id, keep_sealed],
                    )
                    .await?;
                }
                AttemptOutcome::ResendFailed(error) => {
                    execute(
                        &client,
                        "UPDATE courier SET status = 'failed', attempts = $2, last_error = $3, sealed = NULL WHERE id = $1",
                        &[&id, &attempts, error],
                    )
                    .await?;
                }
                AttemptOutcome::Failed(error) => {
                    // Unless the code went out again over another channel: then it may have been received.
                    execute(
                        &client,
                        "WITH failed AS (UPDATE courier SET status = 'failed', attempts = $2, last_error = $3, sealed = NULL WHERE id = $1)
                         DELETE FROM otp_challenges WHERE address = $4 AND otp_hash = $5
                             AND NOT EXISTS (SELECT 1 FROM courier WHERE address = $4 AND otp_hash = $5 AND id <> $1
                                 AND (status = 'queued' OR (status = 'sent' AND sealed IS NOT NULL)))",
                        &[&id, &attempts, error, address, otp_hash],
                    )
                    .await?;
                }
                AttemptOutcome::Retry(error, retry_at) => {
                    execute(
                        &client,
                        "UPDATE courier SET attempts = $2, last_error = $3, next_attempt_ms = $4 WHERE id = $1",
                        &[&id, &attempts, error, retry_at],
                    )
                    .await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Applies a delivery receipt (see `Db::apply_delivery_receipt`). The row stays locked
    /// until the transaction ends: receipts for one message, on any instance, take turns.
    pub async fn apply_delivery_receipt(
        &self,
        receipt: DeliveryReceipt,
        now_ms: i64,
        carrier_left: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Result<ReceiptOutcome, StorageError> {
        let (receipt, carrier_left) = (&receipt, &carrier_left);
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            let found = query_opt(
                &tx,
                "SELECT id, address, otp_hash, instance, failed_via, receipt_status, sealed IS NOT NULL, created_at FROM courier
                 WHERE provider_message_id = $1 AND status = 'sent' AND instance = ANY($2) ORDER BY id DESC LIMIT 1 FOR UPDATE",
                &[&receipt.message_id, &receipt.instances],
            )
            .await?;
            let Some(found) = found else { return Ok(ReceiptOutcome::Unknown) };
            let row = ReceiptTarget {
                id: found.try_get(0)?,
                address: found.try_get(1)?,
                otp_hash: found.try_get(2)?,
                instance: found.try_get(3)?,
                failed_via: found.try_get(4)?,
                receipt_status: found.try_get(5)?,
                sealed: found.try_get(6)?,
                created_at: found.try_get(7)?,
            };
            let Some(change) = receipt_change(&row, receipt.status) else { return Ok(ReceiptOutcome::Unchanged) };
            let resend = change.may_resend && {
                let waiting = query_one(
                    &tx,
                    "SELECT EXISTS (SELECT 1 FROM otp_challenges
                         WHERE address = $1 AND otp_hash = $2 AND expires_at > $3 AND claimed_at IS NULL)",
                    &[&row.address, &row.otp_hash, &(now_ms / 1000)],
                )
                .await?;
                waiting.try_get::<_, bool>(0)? && carrier_left(&row.address, &change.failed_via)
            };
            execute(
                &tx,
                "UPDATE courier SET receipt_status = $2, receipt_error = $3, receipt_at = $4, failed_via = $5,
                     sealed = CASE WHEN $6 THEN NULL ELSE sealed END,
                     status = CASE WHEN $7 THEN 'queued' ELSE status END,
                     next_attempt_ms = CASE WHEN $7 THEN $8 ELSE next_attempt_ms END
                 WHERE id = $1",
                &[
                    &row.id,
                    &receipt.status.as_str(),
                    &receipt.error_code,
                    &receipt.reported_at.unwrap_or(now_ms / 1000),
                    &change.failed_via,
                    &change.wipe_sealed,
                    &resend,
                    &now_ms,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(ReceiptOutcome::Recorded { instance: row.instance, address: row.address, queued_at: row.created_at, resent: resend })
        })
        .await
    }

    /// Deletes finished rows created before `before` (unix seconds); returns how many.
    pub async fn purge_finished_messages(&self, before: i64) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let purged = execute(
                &client,
                "DELETE FROM courier WHERE id IN
                     (SELECT id FROM courier WHERE status <> 'queued' AND created_at < $1 FOR UPDATE SKIP LOCKED)",
                &[&before],
            )
            .await?;
            Ok(rows(purged))
        })
        .await
    }
}
