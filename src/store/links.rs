//! Linked addresses: further addresses a user proved while signed in. A login through
//! one of them is the same user (see `Db::record_login`), and its sessions end when the
//! address is unlinked.

pub use crate::store::records::{LinkOutcome, LinkedAddress};
use crate::store::{Db, StorageError};

impl Db {
    /// Links `address` to user `user_id`, and uses up the code that proved it, if one did.
    pub async fn link_address(&self, user_id: i64, address: &str, claimed_code: Option<[u8; 32]>) -> Result<LinkOutcome, StorageError> {
        let now = self.clock().now();
        dispatch!(self, |store| store.link_address(user_id, address, claimed_code, now))
    }

    /// Unlinks `address` from user `user_id`: ends the sessions that logged in through it and
    /// queues the platform's `userdel` of the user a login through it made there. `None`
    /// when it is not linked to this user; else how many sessions ended.
    pub async fn unlink_address(&self, user_id: i64, address: &str) -> Result<Option<usize>, StorageError> {
        let now = self.clock().now();
        dispatch!(self, |store| store.unlink_address(user_id, address, now))
    }

    /// The addresses linked to user `user_id`, oldest first.
    pub async fn linked_addresses(&self, user_id: i64) -> Result<Vec<LinkedAddress>, StorageError> {
        dispatch!(self, |store| store.linked_addresses(user_id))
    }

    /// The own address of the user `address` is linked to; `None` when it is linked to no one.
    pub async fn link_target(&self, address: &str) -> Result<Option<String>, StorageError> {
        let holder = dispatch!(self, |store| store.link_holder(address))?;
        Ok(holder.map(|(_, own)| own))
    }
}
