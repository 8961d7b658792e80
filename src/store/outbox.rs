//! The outbox: upstream messages waiting to be sent, written in the transaction that
//! causes them (see `delivery::outbox` for their sender).

pub use crate::store::records::{Pending, USERDEL};
use crate::store::{Db, StorageError};

impl Db {
    /// The next due notice, leased for `lease_secs` so no other sender takes it meanwhile.
    pub async fn take_next_notice(&self, now: i64, lease_secs: i64) -> Result<Option<Pending>, StorageError> {
        dispatch!(self, |store| store.take_next_notice(now, lease_secs))
    }

    /// Upstream took the notice: it is never sent again.
    pub async fn acknowledge_notice(&self, id: i64) -> Result<(), StorageError> {
        dispatch!(self, |store| store.acknowledge_notice(id))
    }

    /// A failed send: try again at `next_attempt_at` (unix seconds).
    pub async fn reschedule_notice(&self, id: i64, attempts: u32, next_attempt_at: i64, error: String) -> Result<(), StorageError> {
        dispatch!(self, |store| store.reschedule_notice(id, attempts, next_attempt_at, error))
    }
}
