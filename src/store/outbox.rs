//! The outbox: upstream messages waiting to be sent, written in the transaction that
//! causes them (see `delivery::outbox` for their sender).

pub use crate::store::records::{Pending, USERDEL};
use crate::store::{Backend, Db, StorageError};

impl Db {
    /// The next due notice, leased for `lease_secs` so no other sender takes it meanwhile.
    pub async fn take_next_notice(&self, now: i64, lease_secs: i64) -> Result<Option<Pending>, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.take_next_notice(now, lease_secs).await,
            Backend::Postgres(pg) => pg.take_next_notice(now, lease_secs).await,
        }
    }

    /// Upstream took the notice: it is never sent again.
    pub async fn acknowledge_notice(&self, id: i64) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.acknowledge_notice(id).await,
            Backend::Postgres(pg) => pg.acknowledge_notice(id).await,
        }
    }

    /// A failed send: try again at `next_attempt_at` (unix seconds).
    pub async fn reschedule_notice(&self, id: i64, attempts: u32, next_attempt_at: i64, error: String) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.reschedule_notice(id, attempts, next_attempt_at, error).await,
            Backend::Postgres(pg) => pg.reschedule_notice(id, attempts, next_attempt_at, error).await,
        }
    }
}
