//! Linked addresses: further addresses a user proved while signed in. A login through
//! one of them is the same user (see `Db::record_login`), and its sessions end when the
//! address is unlinked.

use std::sync::Arc;

pub use crate::store::records::{LinkOutcome, LinkedAddress};
use crate::store::{Backend, Db, StorageError};

impl Db {
    /// Links `address` to user `user_id`, and uses up the code that proved it, if one did.
    pub async fn link_address(&self, user_id: i64, address: &str, claimed_code: Option<[u8; 32]>) -> Result<LinkOutcome, StorageError> {
        let now = self.clock().now();
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.link_address(user_id, address.to_string(), claimed_code, now).await,
            Backend::Postgres(pg) => pg.link_address(user_id, address, claimed_code, now).await,
        }
    }

    /// Unlinks `address` from user `user_id`: ends the sessions that logged in through it and
    /// queues the platform's `userdel` of the user a login through it made there. `None`
    /// when it is not linked to this user; else how many sessions ended.
    pub async fn unlink_address(&self, user_id: i64, address: &str) -> Result<Option<usize>, StorageError> {
        let now = self.clock().now();
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.unlink_address(user_id, address.to_string(), now).await,
            Backend::Postgres(pg) => pg.unlink_address(user_id, address, now).await,
        }
    }

    /// The addresses linked to user `user_id`, oldest first.
    pub async fn linked_addresses(self: &Arc<Self>, user_id: i64) -> Result<Vec<LinkedAddress>, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.linked_addresses(user_id).await,
            Backend::Postgres(pg) => pg.linked_addresses(user_id).await,
        }
    }

    /// The own address of the user `address` is linked to; `None` when it is linked to no one.
    pub async fn link_target(self: &Arc<Self>, address: &str) -> Result<Option<String>, StorageError> {
        let holder = match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.link_holder(address.to_string()).await,
            Backend::Postgres(pg) => pg.link_holder(address).await,
        };
        Ok(holder?.map(|(_, own)| own))
    }
}
