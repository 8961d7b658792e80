//! The courier table: outgoing code messages, queued in the transaction that stores
//! the code, sealed (see `domain::keys::MessageSeal`), and kept as a delivery record.
//! `delivery::courier` sends them.

use crate::domain::keys::MessageSeal;
use crate::domain::ratelimit::{Admission, Refusal};
pub use crate::store::records::{
    open_message, seal_message, AttemptOutcome, Claimed, DeliveryReceipt, Enqueued, QueuedMessage, ReceiptOutcome, ReceiptStatus, BATCH,
};
use crate::store::{Db, NewChallenge, StorageError};

impl Db {
    /// Stores the challenge and queues its sealed message `(address, appid, sealed,
    /// channel)` in one transaction, leased until `lease_until`; `admit` runs once the
    /// resend window allows a new code, before anything is written. `channel` is the one
    /// the client asked for (`None`: the route's order).
    ///
    /// A start that asks for a channel other than the one the address's pending code was
    /// last queued for (`None` counts as another) sends that code again instead
    /// ([`Enqueued::Resent`]), while it is valid for this app, unclaimed, not guessed at
    /// wrongly yet and still sealed in a courier row: a new row for it, the challenge given
    /// the new challenge id and the resend window started anew, and the code's rows still
    /// queued cancelled (the new one takes over). Otherwise the new code replaces it, as
    /// without a channel.
    pub async fn enqueue_message(
        &self,
        challenge: NewChallenge,
        message: (String, String, Vec<u8>, Option<String>),
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
    /// failure also deletes the challenge, since nobody received that code, unless another
    /// message of it is queued or was sent and is kept sealed (it went out again over
    /// another channel).
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

    /// Applies a delivery receipt to the message it names, among those the receipt's
    /// instances sent and not yet sent again: keeps its status, error code and time (the
    /// provider's, else now), only when it moves the row forward (sent, then a failure,
    /// then delivered), so a replayed receipt changes nothing. `delivered` wipes a message
    /// kept sealed. A failure adds the instance to `failed_via` and, while the message is
    /// still sealed, its code waits unused and unexpired, and `carrier_left(address,
    /// failed_via)` says an instance of its route remains, queues it again at once, in the
    /// same transaction: receipts racing on several instances resend it once.
    pub async fn apply_delivery_receipt(
        &self,
        receipt: DeliveryReceipt,
        carrier_left: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Result<ReceiptOutcome, StorageError> {
        let now_ms = self.clock().now_ms();
        dispatch!(self, |store| store.apply_delivery_receipt(receipt, now_ms, carrier_left))
    }

    /// Deletes finished rows created before `before` (unix seconds); returns how many.
    pub async fn purge_finished_messages(&self, before: i64) -> Result<usize, StorageError> {
        dispatch!(self, |store| store.purge_finished_messages(before))
    }
}
