//! The durable courier: every outgoing code message is a row in the `courier`
//! table, written in the transaction that stores the code. The login request makes
//! the first attempt at once (waiting a bounded time for it, so a hard failure is
//! still answered synchronously); a background worker retries transient failures
//! with exponential backoff while the code is valid, and resumes after a restart
//! what was left queued.

use rusqlite::{params, Connection};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::config::Config;
use crate::delivery::senders::{OtpMessage, SendError, Senders};
use crate::domain::address::Address;
use crate::domain::keys::MessageSeal;
use crate::domain::metrics;
use crate::store::{self, now_ms, Db, NewChallenge, StorageError};

/// Rows claimed per round.
const BATCH: usize = 16;
/// Longest sleep between looks at the queue (a new message also wakes the worker).
const IDLE_POLL_MS: i64 = 1000;
/// Sent and failed rows are kept this long as a delivery record.
const KEEP_FINISHED_SECS: i64 = 7 * 24 * 3600;

/// What a login request learns about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// A code was sent moments ago; retry after this many seconds. Nothing was queued.
    TooSoon(u64),
    /// `admit` refused the message (the SMS budget is spent); retry after this many seconds.
    /// Nothing was queued.
    Refused(u64),
    Sent,
    /// The first attempt failed; it will be retried.
    Retrying,
    /// The first attempt failed for good and the code was deleted.
    Failed,
    /// The first attempt has not finished within `COURIER_WAIT_MS`.
    InFlight,
}

pub struct Courier {
    db: Arc<Db>,
    senders: Senders,
    /// Queued messages hold the code: they are stored encrypted.
    seal: MessageSeal,
    max_attempts: u32,
    retry_base_ms: i64,
    wait_first: Duration,
    /// How long a claimed row stays hidden from later rounds: longer than any attempt,
    /// so a crash mid-attempt only delays the retry.
    lease_ms: i64,
    wake: Notify,
    stopped: AtomicBool,
    /// Delivery attempts under way, so that shutdown can wait for them to be recorded.
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Counts one attempt as under way for as long as it lives.
struct InFlight<'a>(&'a Courier);

impl<'a> InFlight<'a> {
    fn start(courier: &'a Courier) -> Self {
        courier.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(courier)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

struct Queued {
    id: i64,
    address: String,
    appid: String,
    otp_hash: Vec<u8>,
    otp: String,
    body: String,
    attempts: u32,
    expires_at: i64,
}

impl Courier {
    pub fn from_config(config: &Config, db: Arc<Db>, senders: Senders, seal: MessageSeal) -> Courier {
        let slowest_secs = config.provider_timeout_secs.max(config.sms_http_timeout_secs).max(30);
        Courier {
            db,
            senders,
            seal,
            max_attempts: config.courier_max_attempts,
            retry_base_ms: config.courier_retry_base_ms as i64,
            wait_first: Duration::from_millis(config.courier_wait_ms),
            lease_ms: 2 * 1000 * slowest_secs as i64,
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Stores the challenge and queues its message in one transaction, then makes the
    /// first attempt at once and waits up to `COURIER_WAIT_MS` for it. The row is queued
    /// leased to this attempt, so the worker only takes it over if the process dies
    /// mid-attempt or the attempt schedules a retry.
    ///
    /// `admit` runs inside the transaction once the resend window allows a new code, so a
    /// budget it spends pays only for messages that are really queued.
    pub async fn store_and_send(
        self: &Arc<Self>,
        challenge: NewChallenge,
        message: OtpMessage,
        admit: impl FnOnce() -> Result<(), u64> + Send + 'static,
    ) -> Result<Dispatch, StorageError> {
        let lease_until = now_ms() + self.lease_ms;
        let (otp_hash, expires_at) = (challenge.otp_hash, challenge.now + challenge.ttl_secs);
        let sealed = seal_message(&self.seal, &message, &otp_hash);
        let queued = (message.to.as_str().to_string(), message.appid.clone(), sealed);
        let id = match self.db.call(move |conn| enqueue(conn, &challenge, &queued, lease_until, admit)).await? {
            Enqueued::Stored(id) => id,
            Enqueued::TooSoon(wait) => return Ok(Dispatch::TooSoon(wait)),
            Enqueued::Refused(wait) => return Ok(Dispatch::Refused(wait)),
        };
        let row = Queued {
            id,
            address: message.to.as_str().to_string(),
            appid: message.appid,
            otp_hash: otp_hash.to_vec(),
            otp: message.otp,
            body: message.text,
            attempts: 0,
            expires_at,
        };
        let courier = Arc::clone(self);
        let (answer, answered) = tokio::sync::oneshot::channel();
        // A task of its own: when the wait runs out, the attempt still finishes and is recorded.
        tokio::spawn(async move { courier.attempt(row, Some(answer)).await }.in_current_span());
        Ok(tokio::time::timeout(self.wait_first, answered).await.ok().and_then(Result::ok).unwrap_or(Dispatch::InFlight))
    }

    /// The worker: sends due messages until [`Courier::stop`]. Run exactly one per database.
    pub async fn run(self: Arc<Self>) {
        while !self.stopped.load(Ordering::SeqCst) {
            let now = now_ms();
            let lease_until = now + self.lease_ms;
            let seal = self.seal.clone();
            let (batch, next_due) = match self.db.call(move |conn| claim_due(conn, &seal, now, lease_until)).await {
                Ok(claimed) => {
                    metrics::COURIER_QUEUE_DEPTH.set(claimed.queued);
                    (claimed.batch, claimed.next_due)
                }
                Err(e) => {
                    tracing::error!("courier: reading the queue failed: {e}");
                    (Vec::new(), None)
                }
            };
            let full = batch.len() == BATCH;
            for row in batch {
                let courier = Arc::clone(&self);
                // Attempts run side by side: one slow provider call must not hold up the others.
                tokio::spawn(async move { courier.attempt(row, None).await }.in_current_span());
            }
            if full {
                continue;
            }
            let sleep_ms = next_due.map_or(IDLE_POLL_MS, |due| (due - now_ms()).clamp(1, IDLE_POLL_MS));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            }
        }
    }

    /// Ends the worker after its current round; queued messages stay for the next start.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Waits, at most `limit`, for the attempts under way to finish and be recorded, so
    /// that a message delivered just before shutdown is not sent again after the restart.
    pub async fn drain(&self, limit: Duration) {
        let all_done = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(limit, all_done).await.is_err() {
            tracing::warn!(
                attempts = self.in_flight.load(Ordering::SeqCst),
                "shutdown: delivery attempts still running; they are retried after the restart"
            );
        }
    }

    /// Deletes finished rows past their keeping time; returns how many.
    pub async fn purge_finished(&self) -> Result<usize, StorageError> {
        let before = store::now() - KEEP_FINISHED_SECS;
        self.db.call(move |conn| conn.execute("DELETE FROM courier WHERE status != 'queued' AND created_at < ?1", [before])).await
    }

    /// Sends one message and records the outcome; `answer` learns how it went: for a
    /// delivery at once, for a failure only once it is recorded (a code that was not
    /// delivered is deleted before the client hears SENDFAILED).
    async fn attempt(&self, row: Queued, mut answer: Option<tokio::sync::oneshot::Sender<Dispatch>>) {
        let _in_flight = InFlight::start(self);
        let to = Address::from_stored(&row.address);
        let message = OtpMessage { to: to.clone(), otp: row.otp, text: row.body, appid: row.appid.clone() };
        let (sender_name, result) = match self.senders.for_address(&to) {
            Some(sender) => {
                metrics::SENDER_ATTEMPTS.with_label_values(&[sender.name()]).inc();
                (sender.name(), sender.send(&message).await)
            }
            None => ("none", Err(SendError::permanent("no sender is configured for this kind of address"))),
        };
        let attempts = row.attempts + 1;
        let (id, otp_hash) = (row.id, row.otp_hash.clone());
        let (dispatch, update) = match result {
            Ok(()) => {
                tracing::info!(sender = sender_name, to = %to.masked(), appid = row.appid, attempt = attempts, "code sent");
                (Dispatch::Sent, Update::Sent)
            }
            Err(error) => {
                metrics::SENDER_FAILURES.with_label_values(&[sender_name]).inc();
                // Some providers echo the message in their error replies; neither the code nor the
                // full number may reach a log.
                let reason = to.masked_in(&error.reason.replace(&message.otp, "[code]"));
                let retry_at = now_ms() + self.retry_base_ms.saturating_mul(1 << (attempts - 1).min(20));
                let last = error.permanent || attempts >= self.max_attempts || retry_at >= row.expires_at * 1000;
                let next = if last { "giving up".to_string() } else { format!("retrying in {} ms", retry_at - now_ms()) };
                tracing::warn!(sender = sender_name, to = %to.masked(), attempt = attempts, "code not delivered: {reason}; {next}");
                if last {
                    (Dispatch::Failed, Update::Failed(reason))
                } else {
                    (Dispatch::Retrying, Update::Retry(reason, retry_at))
                }
            }
        };
        if let Some(answer) = answer.take_if(|_| dispatch == Dispatch::Sent) {
            let _ = answer.send(dispatch);
        }
        let retry = matches!(update, Update::Retry(..));
        let address = row.address;
        let saved = self.db.call(move |conn| record_attempt(conn, id, attempts, &update, &address, &otp_hash)).await;
        if let Err(e) = saved {
            tracing::error!("courier: recording a delivery attempt failed: {e}");
        }
        if retry {
            // The worker may be asleep until a later message falls due.
            self.wake.notify_one();
        }
        if let Some(answer) = answer {
            let _ = answer.send(dispatch);
        }
    }
}

enum Update {
    Sent,
    Failed(String),
    Retry(String, i64),
}

enum Enqueued {
    /// Stored, with the courier row's id.
    Stored(i64),
    TooSoon(u64),
    Refused(u64),
}

/// What binds a sealed message to its row: it opens only for this address and code.
fn seal_context(address: &str, otp_hash: &[u8]) -> Vec<u8> {
    [address.as_bytes(), &[0], otp_hash].concat()
}

/// The code and the rendered text, encrypted: `code \n text` (a code has no line break).
fn seal_message(seal: &MessageSeal, message: &OtpMessage, otp_hash: &[u8]) -> Vec<u8> {
    let plaintext = format!("{}\n{}", message.otp, message.text);
    seal.seal(plaintext.as_bytes(), &seal_context(message.to.as_str(), otp_hash))
}

/// The code and the text of a sealed message, or `None` when this key cannot open it.
fn open_message(seal: &MessageSeal, sealed: &[u8], address: &str, otp_hash: &[u8]) -> Option<(String, String)> {
    let plaintext = String::from_utf8(seal.open(sealed, &seal_context(address, otp_hash))?).ok()?;
    let (otp, text) = plaintext.split_once('\n')?;
    Some((otp.to_string(), text.to_string()))
}

/// Encrypts the messages that earlier releases queued in clear and clears the text of
/// finished ones; returns how many rows held text in clear.
pub fn seal_rows_in_clear(conn: &mut Connection, seal: &MessageSeal) -> rusqlite::Result<usize> {
    store::atomically(conn, |tx| {
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
    (address, appid, sealed): &(String, String, Vec<u8>),
    lease_until: i64,
    admit: impl FnOnce() -> Result<(), u64>,
) -> rusqlite::Result<Enqueued> {
    if let Some(wait) = store::resend_wait(conn, challenge)? {
        return Ok(Enqueued::TooSoon(wait));
    }
    // Checked before anything is written: a refusal leaves the previous code valid.
    if let Err(wait) = admit() {
        return Ok(Enqueued::Refused(wait));
    }
    store::atomically(conn, |tx| {
        store::store_challenge(tx, challenge)?;
        tx.prepare_cached(
            "INSERT INTO courier (address, appid, otp_hash, sealed, status, next_attempt_ms, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
        )?
        .execute(params![
            address,
            appid,
            &challenge.otp_hash[..],
            sealed,
            lease_until,
            challenge.now + challenge.ttl_secs,
            challenge.now
        ])?;
        Ok(Enqueued::Stored(tx.last_insert_rowid()))
    })
}

struct Claimed {
    batch: Vec<Queued>,
    /// When the next queued message falls due.
    next_due: Option<i64>,
    /// Messages still queued, in flight included.
    queued: i64,
}

/// Takes up to [`BATCH`] due messages, leasing them until `lease_until`. A message the
/// key cannot open (the key changed since it was queued) fails for good.
fn claim_due(conn: &mut Connection, seal: &MessageSeal, now_ms: i64, lease_until: i64) -> rusqlite::Result<Claimed> {
    store::atomically(conn, |tx| {
        // A code that was used, replaced by a newer one or expired is not worth an SMS.
        tx.prepare_cached(
            "UPDATE courier SET status = 'cancelled', last_error = 'code no longer valid (used, replaced or expired)', sealed = NULL
             WHERE status = 'queued' AND NOT EXISTS (SELECT 1 FROM otp_challenges c
                 WHERE c.address = courier.address AND c.otp_hash = courier.otp_hash AND c.expires_at > ?1)",
        )?
        .execute([now_ms / 1000])?;
        let due = {
            let mut select = tx.prepare_cached(
                "SELECT id, address, appid, otp_hash, sealed, attempts, expires_at FROM courier
                 WHERE status = 'queued' AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms LIMIT ?2",
            )?;
            let rows = select.query_map(params![now_ms, BATCH as i64], |r| {
                let sealed: Option<Vec<u8>> = r.get(4)?;
                let queued = Queued {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    appid: r.get(2)?,
                    otp_hash: r.get(3)?,
                    otp: String::new(),
                    body: String::new(),
                    attempts: r.get(5)?,
                    expires_at: r.get(6)?,
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
                    store::remove_challenge(tx, &row.address, &row.otp_hash)?;
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
fn record_attempt(conn: &mut Connection, id: i64, attempts: u32, update: &Update, address: &str, otp_hash: &[u8]) -> rusqlite::Result<()> {
    store::atomically(conn, |tx| {
        match update {
            Update::Sent => {
                tx.prepare_cached("UPDATE courier SET status = 'sent', attempts = ?2, sealed = NULL WHERE id = ?1")?
                    .execute(params![id, attempts])?;
            }
            Update::Failed(error) => {
                tx.prepare_cached("UPDATE courier SET status = 'failed', attempts = ?2, last_error = ?3, sealed = NULL WHERE id = ?1")?
                    .execute(params![id, attempts, error])?;
                store::remove_challenge(tx, address, otp_hash)?;
            }
            Update::Retry(error, retry_at) => {
                tx.prepare_cached("UPDATE courier SET attempts = ?2, last_error = ?3, next_attempt_ms = ?4 WHERE id = ?1")?
                    .execute(params![id, attempts, error, retry_at])?;
            }
        }
        Ok(())
    })
}
