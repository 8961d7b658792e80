//! The durable courier: every outgoing code message is a row in the `courier`
//! table, written in the transaction that stores the code. The login request makes
//! the first attempt at once (waiting a bounded time for it, so a hard failure is
//! still answered synchronously); a background worker retries transient failures
//! with exponential backoff while the code is valid, and resumes after a restart
//! what was left queued.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::config::{Channel, Config};
use crate::delivery::senders::{Accepted, OtpMessage, OtpSender, SendError, Senders};
use crate::domain::address::Address;
use crate::domain::breaker::Outcome;
use crate::domain::keys::MessageSeal;
use crate::domain::metrics;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::courier::{self as courier_rows, AttemptOutcome, Enqueued, QueuedMessage};
use crate::store::{Db, NewChallenge, StorageError};

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
    /// `admit` refused the message (the SMS budget is spent, or cannot be checked).
    /// Nothing was queued.
    Refused(Refusal),
    /// Delivered, through an instance of this channel (none for e-mail).
    Sent(Option<Channel>),
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

/// One instance a message may go through.
struct Carrier<'a> {
    name: &'a str,
    sender: &'a Arc<dyn OtpSender>,
    /// `None` for the e-mail sender.
    channel: Option<Channel>,
    /// Whether it reports delivery: only then is a message kept for a resend elsewhere.
    takes_receipts: bool,
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

impl Courier {
    pub fn from_config(config: &Config, db: Arc<Db>, senders: Senders, seal: MessageSeal) -> Courier {
        let slowest_secs = config.provider.timeout_secs.max(config.sms_http.timeout_secs).max(30);
        Courier {
            db,
            senders,
            seal,
            max_attempts: config.courier.max_attempts,
            retry_base_ms: config.courier.retry_base_ms as i64,
            wait_first: Duration::from_millis(config.courier.wait_ms),
            lease_ms: 1000 * if config.courier.lease_secs > 0 { config.courier.lease_secs } else { 2 * slowest_secs } as i64,
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
    /// `channel` is the one the client asked for: the route's instances of it are tried
    /// first. When the address's pending code was last sent for another channel, that code
    /// goes out again in place of this one (see [`Db::enqueue_message`]).
    ///
    /// `admit` runs inside the transaction once the resend window allows a new code, so a
    /// budget it spends pays only for messages that are really queued.
    pub async fn store_and_send(
        self: &Arc<Self>,
        challenge: NewChallenge,
        message: OtpMessage,
        channel: Option<Channel>,
        admit: impl FnOnce() -> Admission<Refusal> + Send + 'static,
    ) -> Result<Dispatch, StorageError> {
        let lease_until = self.db.clock().now_ms() + self.lease_ms;
        let (otp_hash, expires_at) = (challenge.otp_hash, challenge.now + challenge.ttl_secs);
        let address = message.to.as_str().to_string();
        let sealed = courier_rows::seal_message(&self.seal, &address, &message.otp, &message.text, &otp_hash);
        let channel = channel.map(|channel| channel.as_str().to_string());
        let queued = (address.clone(), message.appid.clone(), sealed, channel.clone());
        let (id, otp_hash, otp, body, expires_at) = match self.db.enqueue_message(challenge, queued, lease_until, admit).await? {
            Enqueued::Stored(id) => (id, otp_hash.to_vec(), message.otp, message.text, expires_at),
            Enqueued::Resent { id, otp_hash, sealed, expires_at } => {
                match courier_rows::open_message(&self.seal, &sealed, &address, &otp_hash) {
                    Some((otp, body)) => (id, otp_hash, otp, body, expires_at),
                    None => {
                        // As the worker fails a message the key cannot open.
                        let error = "the message cannot be decrypted: the server key changed since it was queued".to_string();
                        self.db.record_attempt(id, 0, AttemptOutcome::Failed(error), address, otp_hash).await?;
                        return Ok(Dispatch::Failed);
                    }
                }
            }
            Enqueued::TooSoon(wait) => return Ok(Dispatch::TooSoon(wait)),
            Enqueued::Refused(wait) => return Ok(Dispatch::Refused(wait)),
        };
        let row = QueuedMessage {
            id,
            address,
            appid: message.appid,
            otp_hash,
            otp,
            body,
            attempts: 0,
            expires_at,
            failed_via: String::new(),
            channel,
        };
        let courier = Arc::clone(self);
        let (answer, answered) = tokio::sync::oneshot::channel();
        // A task of its own: when the wait runs out, the attempt still finishes and is recorded.
        tokio::spawn(async move { courier.attempt(row, Some(answer)).await }.in_current_span());
        Ok(tokio::time::timeout(self.wait_first, answered).await.ok().and_then(Result::ok).unwrap_or(Dispatch::InFlight))
    }

    /// The worker: sends due messages until [`Courier::stop`]. One runs in every instance:
    /// each takes rows under a lease, so no two send one message while its holder lives.
    pub async fn run(self: Arc<Self>) {
        while !self.stopped.load(Ordering::SeqCst) {
            let now = self.db.clock().now_ms();
            let lease_until = now + self.lease_ms;
            let (batch, next_due) = match self.db.claim_due_messages(self.seal.clone(), now, lease_until).await {
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
            let sleep_ms = next_due.map_or(IDLE_POLL_MS, |due| (due - self.db.clock().now_ms()).clamp(1, IDLE_POLL_MS));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            }
        }
    }

    /// What carries the messages, and the health of each provider instance.
    pub fn senders(&self) -> &Senders {
        &self.senders
    }

    /// Wakes the worker: a message was queued again for now (a failed delivery receipt).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether a message to `address` (as stored) has an instance left to go through
    /// once those in `failed_via` (comma-separated) are left out.
    pub fn has_carrier_left(&self, address: &str, failed_via: &str) -> bool {
        !self.carriers(&Address::from_stored(address), failed_via, None).is_empty()
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
        self.db.purge_finished_messages(self.db.clock().now() - KEEP_FINISHED_SECS).await
    }

    /// The instances to try for this message, in order: its route's, without those whose
    /// delivery of it was reported failed, those of the channel the client asked for first;
    /// an e-mail address has its one sender.
    fn carriers<'a>(&'a self, to: &Address, failed_via: &str, channel: Option<&str>) -> Vec<Carrier<'a>> {
        match to {
            Address::Phone(digits) => {
                let failed: Vec<&str> = failed_via.split(',').filter(|name| !name.is_empty()).collect();
                let route = self.senders.route(digits);
                let mut candidates: Vec<usize> =
                    route.iter().copied().filter(|&i| !failed.contains(&self.senders.instances[i].name.as_str())).collect();
                if let Some(asked) = channel.and_then(Channel::parse) {
                    // Stable: the rest of the route follows in its order, as the fallback.
                    candidates.sort_by_key(|&i| self.senders.instances[i].channel != asked);
                }
                candidates
                    .into_iter()
                    .map(|i| {
                        let instance = &self.senders.instances[i];
                        Carrier {
                            name: &instance.name,
                            sender: &instance.sender,
                            channel: Some(instance.channel),
                            takes_receipts: instance.takes_receipts,
                        }
                    })
                    .collect()
            }
            Address::Email(_) => self
                .senders
                .email
                .iter()
                .map(|sender| Carrier { name: sender.name(), sender, channel: None, takes_receipts: false })
                .collect(),
            Address::Account(_) => Vec::new(),
        }
    }

    /// Sends one message and records the outcome; `answer` learns how it went: for a
    /// delivery at once, for a failure only once it is recorded (a code that was not
    /// delivered is deleted before the client hears SENDFAILED). Within the attempt, a
    /// transient failure moves on to the next instance of the route; a refusal of the
    /// number ends it.
    async fn attempt(&self, row: QueuedMessage, mut answer: Option<tokio::sync::oneshot::Sender<Dispatch>>) {
        let _in_flight = InFlight::start(self);
        let to = Address::from_stored(&row.address);
        let carriers = self.carriers(&to, &row.failed_via, row.channel.as_deref());
        let message = OtpMessage { to: to.clone(), otp: row.otp, text: row.body, appid: row.appid.clone() };
        let attempts = row.attempts + 1;
        // A bounded label: one of the world's calling codes.
        let country = crate::domain::phone::country_label(&row.address);
        let mut failures: Vec<String> = Vec::new();
        let mut result: Result<(usize, Accepted), SendError> =
            Err(SendError::permanent("no sender is configured for this kind of address"));
        // An instance whose breaker is open is passed over while another may be tried; when
        // every one is open, they are tried anyway: a degraded provider beats none.
        let breakers = self.senders.breakers.as_deref();
        let mut order: Vec<usize> = Vec::with_capacity(carriers.len());
        for (i, carrier) in carriers.iter().enumerate() {
            let allowed = match breakers {
                Some(breakers) => breakers.allow(carrier.name).await,
                None => true,
            };
            if allowed {
                order.push(i);
            }
        }
        if order.is_empty() {
            order.extend(0..carriers.len());
        }
        for (position, &tried) in order.iter().enumerate() {
            let carrier = &carriers[tried];
            metrics::SENDER_ATTEMPTS.with_label_values(&[carrier.name]).inc();
            let sent = carrier.sender.send(&message).await;
            if let Some(breakers) = breakers {
                // A refused number is the number's fault: the provider answered.
                let outcome = if matches!(&sent, Err(error) if !error.permanent) { Outcome::Failed } else { Outcome::Delivered };
                breakers.record(carrier.name, outcome).await;
            }
            match sent {
                Ok(accepted) => {
                    if !country.is_empty() {
                        metrics::CODES_SENT.with_label_values(&[carrier.name, country]).inc();
                    }
                    result = Ok((tried, accepted));
                    break;
                }
                Err(error) => {
                    metrics::SENDER_FAILURES.with_label_values(&[carrier.name]).inc();
                    if !country.is_empty() {
                        metrics::CODES_FAILED.with_label_values(&[carrier.name, country]).inc();
                    }
                    // Some providers echo the message in their error replies; neither the code nor the
                    // full number may reach a log.
                    let reason = to.masked_in(&error.reason.replace(&message.otp, "[code]"));
                    let next = order.get(position + 1).map(|&i| &carriers[i]).filter(|_| !error.permanent);
                    if let Some(next) = next {
                        tracing::warn!(sender = carrier.name, to = %to.masked(), attempt = attempts, "code not delivered: {reason}; trying {}", next.name);
                    }
                    failures.push(format!("{}: {reason}", carrier.name));
                    result = Err(SendError { reason: failures.join("; "), permanent: error.permanent });
                    if next.is_none() {
                        break;
                    }
                }
            }
        }
        let sender_name = carriers.last().map_or("none", |carrier| carrier.name);
        let (id, otp_hash) = (row.id, row.otp_hash.clone());
        let (dispatch, update) = match result {
            Ok((tried, accepted)) => {
                let carrier = &carriers[tried];
                tracing::debug!(sender = carrier.name, to = %to.masked(), appid = row.appid, attempt = attempts, "code sent");
                // Kept only while a failed receipt could still send it through another instance,
                // or a start could ask for the same code over another channel.
                let another_channel = carriers.iter().any(|other| other.channel != carrier.channel);
                let keep_sealed = (carrier.takes_receipts && tried + 1 < carriers.len()) || another_channel;
                let sent = AttemptOutcome::Sent { instance: carrier.name.to_string(), message_id: accepted.message_id, keep_sealed };
                (Dispatch::Sent(carrier.channel), sent)
            }
            Err(error) => {
                let reason = error.reason;
                let retry_at = self.db.clock().now_ms() + self.retry_base_ms.saturating_mul(1 << (attempts - 1).min(20));
                let last = error.permanent || attempts >= self.max_attempts || retry_at >= row.expires_at * 1000;
                let next = if last { "giving up".to_string() } else { format!("retrying in {} ms", retry_at - self.db.clock().now_ms()) };
                tracing::warn!(sender = sender_name, to = %to.masked(), attempt = attempts, "code not delivered: {reason}; {next}");
                if last && !row.failed_via.is_empty() {
                    // A resend after a failed receipt (or one left with no instance, should the
                    // routes have changed since): the first delivery may still reach the user,
                    // so the code stays.
                    (Dispatch::Failed, AttemptOutcome::ResendFailed(reason))
                } else if last {
                    (Dispatch::Failed, AttemptOutcome::Failed(reason))
                } else {
                    (Dispatch::Retrying, AttemptOutcome::Retry(reason, retry_at))
                }
            }
        };
        if let Some(answer) = answer.take_if(|_| matches!(dispatch, Dispatch::Sent(_))) {
            let _ = answer.send(dispatch);
        }
        let retry = matches!(update, AttemptOutcome::Retry(..));
        let address = row.address;
        let saved = self.db.record_attempt(id, attempts, update, address.clone(), otp_hash).await;
        if let Err(e) = saved {
            tracing::error!("courier: recording a delivery attempt failed: {e}");
        }
        if dispatch == Dispatch::Failed {
            if let Err(e) = self.db.audit(&address, crate::store::audit::DELIVERY_FAILED, sender_name.to_string()).await {
                tracing::warn!("courier: a failed delivery could not be recorded in the audit trail: {e}");
            }
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
