//! The durable outbox of upstream messages: the notices of `domain::notices`.
//! Rows are written in the transaction that causes them, sent by a background
//! task, retried with exponential backoff, and deleted once upstream acknowledged
//! them, so a restart loses none and an acknowledged one is never sent again.

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::delivery::upstream::Upstream;
use crate::domain::address::Address;
use crate::store::{self, Db};

/// How often the sender looks for due messages.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at one message.
const MAX_RETRY_SECS: u64 = 3600;

/// Seconds before attempt number `attempts + 1`: doubles from `base`, at most an hour.
fn backoff(base: u64, attempts: u32) -> u64 {
    base.saturating_mul(1u64 << attempts.saturating_sub(1).min(20)).min(MAX_RETRY_SECS)
}

pub struct Outbox {
    db: Arc<Db>,
    upstream: Upstream,
    from: String,
    retry_secs: u64,
    lease_secs: i64,
    /// Set at shutdown: no further message is taken.
    stopped: AtomicBool,
    /// Held while messages are being sent, so shutdown can wait for an acknowledgement to
    /// be recorded instead of sending that message again after the restart.
    sending: tokio::sync::Mutex<()>,
}

impl Outbox {
    pub fn new(config: &Config, db: Arc<Db>) -> Result<Outbox, String> {
        Ok(Outbox {
            db,
            upstream: Upstream::from_config(config)?,
            from: config.outbox.system_address.clone(),
            retry_secs: config.outbox.retry_secs,
            // Longer than one send can take; a crash mid-send delays the retry by this much.
            lease_secs: (config.upstream.connect_timeout_secs + config.upstream.timeout_secs + 5) as i64,
            stopped: AtomicBool::new(false),
            sending: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends due messages until [`Outbox::drain`]; spawn it once per process.
    pub async fn run(self: Arc<Self>) {
        while !self.stopped.load(Ordering::SeqCst) {
            if let Err(e) = self.send_due().await {
                tracing::warn!("outbox: database error: {e}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// One round: sends every due message; returns how many upstream acknowledged.
    pub async fn send_due(&self) -> Result<usize, store::StorageError> {
        let _sending = self.sending.lock().await;
        let mut sent = 0;
        while !self.stopped.load(Ordering::SeqCst) {
            let (now, lease) = (self.db.clock().now(), self.lease_secs);
            let Some(message) = self.db.take_next_notice(now, lease).await? else {
                return Ok(sent);
            };
            let payload: Value = serde_json::from_str(&message.payload).unwrap_or(Value::String(message.payload.clone()));
            let recipient = Address::from_stored(&message.recipient);
            let to = recipient.masked();
            let joined = crate::domain::notices::phone_in(&payload).map(Address::Phone);
            let id = message.id;
            let sent_upstream = match message.kind.as_str() {
                store::outbox::USERDEL => self.upstream.userdel(payload["uid"].as_str().unwrap_or_default(), &message.recipient).await,
                _ => self.upstream.message(&self.from, &message.recipient, &payload).await,
            };
            match sent_upstream {
                Ok(()) => {
                    self.db.acknowledge_notice(id).await?;
                    tracing::debug!(%to, kind = %message.kind, "outbox: message delivered");
                    sent += 1;
                }
                Err(e) => {
                    // Upstream may echo the request: neither number is logged or kept in full.
                    let error = joined.iter().fold(recipient.masked_in(&e.detail), |text, phone| phone.masked_in(&text));
                    let attempts = message.attempts + 1;
                    let wait = backoff(self.retry_secs, attempts);
                    tracing::warn!(%to, kind = %message.kind, attempts, "outbox: upstream message failed, retrying in {wait}s: {error}");
                    let next = self.db.clock().now() + wait as i64;
                    self.db.reschedule_notice(id, attempts, next, error).await?;
                }
            }
        }
        Ok(sent)
    }

    /// Stops taking messages and waits, at most `limit`, for the one being sent to be
    /// recorded, so that an acknowledged message is not sent again after the restart.
    pub async fn drain(&self, limit: Duration) {
        self.stopped.store(true, Ordering::SeqCst);
        if tokio::time::timeout(limit, self.sending.lock()).await.is_err() {
            tracing::warn!("shutdown: a notification is still being sent; it is retried after the restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!((1..=4).map(|a| backoff(5, a)).collect::<Vec<_>>(), [5, 10, 20, 40]);
        assert_eq!(backoff(5, 30), 3600);
        assert_eq!(backoff(5, u32::MAX), 3600);
    }
}
