//! The courier table: outgoing code messages, queued in the transaction that stores
//! the code, sealed (see `domain::keys::MessageSeal`), and kept as a delivery record.
//! `delivery::courier` sends them.

use crate::domain::keys::MessageSeal;
use crate::domain::ratelimit::{Admission, Refusal};
pub use crate::store::records::{seal_message, AttemptOutcome, Claimed, Enqueued, QueuedMessage, BATCH};
use crate::store::{Db, NewChallenge, StorageError};

impl Db {
    /// Stores the challenge and queues its sealed message `(address, appid, sealed)` in one
    /// transaction, leased until `lease_until`; `admit` runs once the resend window allows
    /// a new code, before anything is written.
    pub async fn enqueue_message(
        &self,
        challenge: NewChallenge,
        message: (String, String, Vec<u8>),
        lease_until: i64,
        admit: impl FnOnce() -> Admission<Refusal> + Send + 'static,
    ) -> Result<Enqueued, StorageError> {
        dispatch!(self, |store| store.enqueue_message(challenge, message, lease_until, admit))
    }

    /// Takes up to [`BATCH`] due messages, leasing them until `lease_until`. A message the
    /// key cannot open (the key changed since it was queued) fails for good.
    pub async fn claim_due_messages(&self, seal: MessageSeal, now_ms: i64, lease_until: i64) -> Result<Claimed, StorageError> {
        dispatch!(self, |store| store.claim_due_messages(seal, now_ms, lease_until))
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
        dispatch!(self, |store| store.record_attempt(id, attempts, outcome, address, otp_hash))
    }

    /// Deletes finished rows created before `before` (unix seconds); returns how many.
    pub async fn purge_finished_messages(&self, before: i64) -> Result<usize, StorageError> {
        dispatch!(self, |store| store.purge_finished_messages(before))
    }
}
