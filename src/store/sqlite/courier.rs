//! The courier table: outgoing code messages, queued in the transaction that stores
//! the code, sealed (see `domain::keys::MessageSeal`), and kept as a delivery record.
//! `delivery::courier` sends them.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::address::Address;
use crate::domain::keys::MessageSeal;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::error::StorageError;
use crate::store::records::{
    open_message, receipt_change, seal_context, AttemptOutcome, Claimed, DeliveryReceipt, Enqueued, NewChallenge, QueuedMessage,
    ReceiptOutcome, ReceiptTarget, BATCH,
};

use super::login::{remove_challenge, resend_wait, store_challenge};
use super::{admitted, atomically, SqliteStore};

/// Encrypts the messages that earlier releases queued in clear and clears the text of
/// finished ones; returns how many rows held text in clear.
pub(in crate::store) fn seal_rows_in_clear(conn: &mut Connection, seal: &MessageSeal) -> rusqlite::Result<usize> {
    atomically(conn, |tx| {
        let rows = tx
            .prepare("SELECT id, address, otp_hash, coalesce(otp, ''), coalesce(body, ''), status FROM courier WHERE otp IS NOT NULL OR body IS NOT NULL")?
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?, r.get::<_, String>(5)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, address, otp_hash, otp, body, status) in &rows {
            let sealed = (status == "queued").then(|| {
                let plaintext = format!("{otp}\n{body}");
                seal.seal(plaintext.as_bytes(), &seal_context(address, otp_hash))
            });
            tx.execute("UPDATE courier SET sealed = ?2, otp = NULL, body = NULL WHERE id = ?1", params![id, sealed])?;
        }
        Ok(rows.len())
    })
}

fn enqueue(
    conn: &mut Connection,
    challenge: &NewChallenge,
    message: &(String, String, Vec<u8>, Option<String>),
    lease_until: i64,
    admit: impl FnOnce() -> Result<(), Refusal>,
) -> rusqlite::Result<Enqueued> {
    if let Some(wait) = resend_wait(conn, challenge)? {
        return Ok(Enqueued::TooSoon(wait));
    }
    let (address, _, sealed, channel) = message;
    let pending = match channel {
        Some(channel) => pending_code_for_another_channel(conn, challenge, channel)?,
        None => None,
    };
    // Checked before anything is written: a refusal leaves the previous code valid.
    if let Err(refusal) = admit() {
        return Ok(Enqueued::Refused(refusal));
    }
    atomically(conn, |tx| {
        let Some(pending) = pending else {
            store_challenge(tx, challenge)?;
            let code = (&challenge.otp_hash[..], &sealed[..], challenge.now + challenge.ttl_secs);
            return Ok(Enqueued::Stored(insert_message(tx, message, code, lease_until, challenge.now)?));
        };
        tx.prepare_cached("UPDATE otp_challenges SET created_at = ?2, challenge_sha256 = ?3 WHERE address = ?1")?.execute(params![
            address,
            challenge.now,
            &challenge.challenge_sha256[..]
        ])?;
        tx.prepare_cached(
            "UPDATE courier SET status = 'cancelled', last_error = 'sent again over another channel', sealed = NULL
             WHERE status = 'queued' AND address = ?1 AND otp_hash = ?2",
        )?
        .execute(params![address, pending.otp_hash])?;
        let code = (&pending.otp_hash[..], &pending.sealed[..], pending.expires_at);
        let id = insert_message(tx, message, code, lease_until, challenge.now)?;
        Ok(Enqueued::Resent { id, otp_hash: pending.otp_hash, sealed: pending.sealed, expires_at: pending.expires_at })
    })
}

/// Queues `message`'s row for `code` (its hash, sealed message and expiry); answers its id.
fn insert_message(
    tx: &Connection,
    (address, appid, _, channel): &(String, String, Vec<u8>, Option<String>),
    (otp_hash, sealed, expires_at): (&[u8], &[u8], i64),
    lease_until: i64,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO courier (address, appid, otp_hash, sealed, status, next_attempt_ms, expires_at, created_at, channel)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8)",
    )?
    .execute(params![address, appid, otp_hash, sealed, lease_until, expires_at, now, channel])?;
    Ok(tx.last_insert_rowid())
}

/// A pending code that may be sent again.
struct PendingCode {
    otp_hash: Vec<u8>,
    sealed: Vec<u8>,
    expires_at: i64,
}

/// The address's pending code, when a start asking for `channel` sends it again (see
/// `Db::enqueue_message`): valid for this app, unclaimed, not guessed at wrongly, still
/// sealed in a queued row or a sent one kept for resends, and last queued for another channel.
fn pending_code_for_another_channel(conn: &Connection, c: &NewChallenge, channel: &str) -> rusqlite::Result<Option<PendingCode>> {
    let code: Option<(Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT otp_hash, expires_at FROM otp_challenges WHERE address = ?1 AND appid = ?2 AND expires_at > ?3
                 AND claimed_at IS NULL AND attempts = 0 AND bound_attempts = 0",
        )?
        .query_row(params![c.address, c.appid, c.now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((otp_hash, expires_at)) = code else {
        return Ok(None);
    };
    // Each half reads an index: the queued rows, and the sent ones kept sealed (named: on
    // `status` alone SQLite's planner would walk every sent row).
    let latest: Option<(Vec<u8>, Option<String>)> = conn
        .prepare_cached(
            "SELECT sealed, channel, id FROM courier WHERE status = 'queued' AND address = ?1 AND otp_hash = ?2 AND sealed IS NOT NULL
             UNION ALL
             SELECT sealed, channel, id FROM courier INDEXED BY courier_kept WHERE status = 'sent' AND sealed IS NOT NULL AND expires_at > ?3
                 AND address = ?1 AND otp_hash = ?2
             ORDER BY 3 DESC LIMIT 1",
        )?
        .query_row(params![c.address, otp_hash, c.now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(latest.filter(|(_, last)| last.as_deref() != Some(channel)).map(|(sealed, _)| PendingCode { otp_hash, sealed, expires_at }))
}

/// Takes up to [`BATCH`] due messages, leasing them until `lease_until`. A message the
/// key cannot open (the key changed since it was queued) fails for good.
fn claim_due(conn: &mut Connection, seal: &MessageSeal, now_ms: i64, lease_until: i64) -> rusqlite::Result<Claimed> {
    atomically(conn, |tx| {
        // A code that was used, replaced by a newer one or expired is not worth an SMS.
        tx.prepare_cached(
            "UPDATE courier SET status = 'cancelled', last_error = 'code no longer valid (used, replaced or expired)', sealed = NULL
             WHERE status = 'queued' AND NOT EXISTS (SELECT 1 FROM otp_challenges c
                 WHERE c.address = courier.address AND c.otp_hash = courier.otp_hash AND c.expires_at > ?1)",
        )?
        .execute([now_ms / 1000])?;
        // Kept for a resend only while the code could still be used.
        // The index named: on `status` alone SQLite's planner would walk every sent row each round.
        tx.prepare_cached(
            "UPDATE courier INDEXED BY courier_kept SET sealed = NULL WHERE status = 'sent' AND sealed IS NOT NULL AND expires_at <= ?1",
        )?
        .execute([now_ms / 1000])?;
        let due = {
            let mut select = tx.prepare_cached(
                "SELECT id, address, appid, otp_hash, sealed, attempts, expires_at, failed_via, channel FROM courier
                 WHERE status = 'queued' AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms LIMIT ?2",
            )?;
            let rows = select.query_map(params![now_ms, BATCH as i64], |r| {
                let sealed: Option<Vec<u8>> = r.get(4)?;
                let queued = QueuedMessage {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    appid: r.get(2)?,
                    otp_hash: r.get(3)?,
                    otp: String::new(),
                    body: String::new(),
                    attempts: r.get(5)?,
                    expires_at: r.get(6)?,
                    failed_via: r.get(7)?,
                    channel: r.get(8)?,
                };
                Ok((queued, sealed))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut batch = Vec::with_capacity(due.len());
        for (mut row, sealed) in due {
            match sealed.and_then(|sealed| open_message(seal, &sealed, &row.address, &row.otp_hash)) {
                Some((otp, body)) => {
                    (row.otp, row.body) = (otp, body);
                    batch.push(row);
                }
                None => {
                    let error = "the message cannot be decrypted: the server key changed since it was queued";
                    tracing::warn!(to = %Address::from_stored(&row.address).masked(), "code not delivered: {error}");
                    tx.prepare_cached("UPDATE courier SET status = 'failed', last_error = ?2, sealed = NULL WHERE id = ?1")?
                        .execute(params![row.id, error])?;
                    remove_challenge(tx, &row.address, &row.otp_hash)?;
                }
            }
        }
        for row in &batch {
            tx.prepare_cached("UPDATE courier SET next_attempt_ms = ?2 WHERE id = ?1")?.execute(params![row.id, lease_until])?;
        }
        let (next_due, queued): (Option<i64>, i64) = tx
            .prepare_cached("SELECT min(next_attempt_ms), count(*) FROM courier WHERE status = 'queued'")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Claimed { batch, next_due, queued })
    })
}

/// Records an attempt. A final outcome wipes the sealed message; a final
/// failure also deletes the challenge, since nobody received that code.
fn record_attempt(
    conn: &mut Connection,
    id: i64,
    attempts: u32,
    update: &AttemptOutcome,
    address: &str,
    otp_hash: &[u8],
) -> rusqlite::Result<()> {
    atomically(conn, |tx| {
        match update {
            // Receipts describe the provider's message the row names: a new one has none yet.
            AttemptOutcome::Sent { instance, message_id, keep_sealed } => {
                tx.prepare_cached(
                    "UPDATE courier SET status = 'sent', attempts = ?2, instance = ?3, provider_message_id = ?4,
                         sealed = CASE WHEN ?5 THEN sealed END, receipt_status = NULL, receipt_error = NULL, receipt_at = NULL
                     WHERE id = ?1",
                )?
                .execute(params![id, attempts, instance, message_id, keep_sealed])?;
            }
            AttemptOutcome::Failed(error) => {
                tx.prepare_cached("UPDATE courier SET status = 'failed', attempts = ?2, last_error = ?3, sealed = NULL WHERE id = ?1")?
                    .execute(params![id, attempts, error])?;
                // Unless the code went out again over another channel: then it may have been received.
                tx.prepare_cached(
                    "DELETE FROM otp_challenges WHERE address = ?1 AND otp_hash = ?2
                         AND NOT EXISTS (SELECT 1 FROM courier WHERE status = 'queued' AND address = ?1 AND otp_hash = ?2)
                         AND NOT EXISTS (SELECT 1 FROM courier WHERE status = 'sent' AND sealed IS NOT NULL AND address = ?1 AND otp_hash = ?2)",
                )?
                .execute(params![address, otp_hash])?;
            }
            AttemptOutcome::ResendFailed(error) => {
                tx.prepare_cached("UPDATE courier SET status = 'failed', attempts = ?2, last_error = ?3, sealed = NULL WHERE id = ?1")?
                    .execute(params![id, attempts, error])?;
            }
            AttemptOutcome::Retry(error, retry_at) => {
                tx.prepare_cached("UPDATE courier SET attempts = ?2, last_error = ?3, next_attempt_ms = ?4 WHERE id = ?1")?
                    .execute(params![id, attempts, error, retry_at])?;
            }
        }
        Ok(())
    })
}

/// Applies a delivery receipt to the sent message it names (see `Db::apply_delivery_receipt`).
fn apply_receipt(
    conn: &mut Connection,
    receipt: &DeliveryReceipt,
    now_ms: i64,
    carrier_left: &dyn Fn(&str, &str) -> bool,
) -> rusqlite::Result<ReceiptOutcome> {
    atomically(conn, |tx| {
        let found = tx
            .prepare_cached(
                "SELECT id, address, otp_hash, instance, failed_via, receipt_status, sealed IS NOT NULL, created_at FROM courier
                 WHERE provider_message_id = ?1 AND status = 'sent' ORDER BY id DESC",
            )?
            .query_map([&receipt.message_id], |r| {
                Ok(ReceiptTarget {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    otp_hash: r.get(2)?,
                    instance: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    failed_via: r.get(4)?,
                    receipt_status: r.get(5)?,
                    sealed: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some(row) = found.into_iter().find(|row| receipt.instances.contains(&row.instance)) else {
            return Ok(ReceiptOutcome::Unknown);
        };
        let Some(change) = receipt_change(&row, receipt.status) else { return Ok(ReceiptOutcome::Unchanged) };
        let code_waiting = || -> rusqlite::Result<bool> {
            tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM otp_challenges
                     WHERE address = ?1 AND otp_hash = ?2 AND expires_at > ?3 AND claimed_at IS NULL)",
            )?
            .query_row(params![row.address, row.otp_hash, now_ms / 1000], |r| r.get(0))
        };
        let resend = change.may_resend && code_waiting()? && carrier_left(&row.address, &change.failed_via);
        tx.prepare_cached(
            "UPDATE courier SET receipt_status = ?2, receipt_error = ?3, receipt_at = ?4, failed_via = ?5,
                 sealed = CASE WHEN ?6 THEN NULL ELSE sealed END,
                 status = CASE WHEN ?7 THEN 'queued' ELSE status END,
                 next_attempt_ms = CASE WHEN ?7 THEN ?8 ELSE next_attempt_ms END
             WHERE id = ?1",
        )?
        .execute(params![
            row.id,
            receipt.status.as_str(),
            receipt.error_code,
            receipt.reported_at.unwrap_or(now_ms / 1000),
            change.failed_via,
            change.wipe_sealed,
            resend,
            now_ms
        ])?;
        Ok(ReceiptOutcome::Recorded { instance: row.instance, address: row.address, queued_at: row.created_at, resent: resend })
    })
}

impl SqliteStore {
    /// Stores the challenge and queues its sealed message `(address, appid, sealed,
    /// channel)` in one transaction, leased until `lease_until`, or sends the pending code
    /// again (see `Db::enqueue_message`); `admit` runs once the resend window allows a new
    /// code, before anything is written.
    pub async fn enqueue_message(
        &self,
        challenge: NewChallenge,
        message: (String, String, Vec<u8>, Option<String>),
        lease_until: i64,
        admit: impl FnOnce() -> Admission<Refusal> + Send + 'static,
    ) -> Result<Enqueued, StorageError> {
        let runtime = tokio::runtime::Handle::current();
        self.call(move |conn| enqueue(conn, &challenge, &message, lease_until, || admitted(&runtime, admit()))).await
    }

    /// Takes up to [`BATCH`] due messages, leasing them until `lease_until` (see [`claim_due`]).
    pub async fn claim_due_messages(&self, seal: MessageSeal, now_ms: i64, lease_until: i64) -> Result<Claimed, StorageError> {
        self.call(move |conn| claim_due(conn, &seal, now_ms, lease_until)).await
    }

    /// Records a delivery attempt (see [`record_attempt`]).
    pub async fn record_attempt(
        &self,
        id: i64,
        attempts: u32,
        outcome: AttemptOutcome,
        address: String,
        otp_hash: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.call(move |conn| record_attempt(conn, id, attempts, &outcome, &address, &otp_hash)).await
    }

    /// Applies a delivery receipt (see `Db::apply_delivery_receipt`).
    pub async fn apply_delivery_receipt(
        &self,
        receipt: DeliveryReceipt,
        now_ms: i64,
        carrier_left: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Result<ReceiptOutcome, StorageError> {
        self.call(move |conn| apply_receipt(conn, &receipt, now_ms, &carrier_left)).await
    }

    /// Deletes finished rows created before `before` (unix seconds); returns how many.
    pub async fn purge_finished_messages(&self, before: i64) -> Result<usize, StorageError> {
        self.call(move |conn| conn.execute("DELETE FROM courier WHERE status != 'queued' AND created_at < ?1", [before])).await
    }
}
