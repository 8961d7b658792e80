//! Deleting an account: the user's rows go in one transaction, and the platform's
//! `userdel` is queued in it, through the outbox, so it is retried until taken.

pub use crate::store::records::DeletedAccount;
use crate::store::{Db, StorageError};

impl Db {
    /// Deletes the user and everything kept for them: sessions (and their push tokens),
    /// linked addresses, their address book, their group memberships, pending codes,
    /// delivery records and notices waiting for them; others' address books that hold
    /// their phone stay. `None` when there is no such user.
    pub async fn delete_account(&self, user_id: i64) -> Result<Option<DeletedAccount>, StorageError> {
        let now = self.clock().now();
        dispatch!(self, |store| store.delete_account(user_id, now))
    }
}
