//! Groups mirrored from the platform and their members, with the notices of each
//! change queued in the change's transaction.

use crate::domain::groups::{ChangedGroup, Group, GroupWrite};
use crate::store::{Db, StorageError};

impl Db {
    /// A group with its members; `None` when there is no such group.
    pub async fn group(&self, gid: i64) -> Result<Option<Group>, StorageError> {
        dispatch!(self, |store| store.group(gid))
    }

    /// Applies a group change and queues its notices, in one transaction; returns the group
    /// and the photo it replaced, `None` (changing nothing) when the group to change is gone.
    pub async fn write_group(&self, change: GroupWrite) -> Result<Option<ChangedGroup>, StorageError> {
        dispatch!(self, |store| store.write_group(change, &self.phones))
    }

    /// Tells the members but `actor` (with `subject`) that the group is gone, and deletes it;
    /// returns the group as the deletion read it (its photo is to be freed by this caller
    /// alone), `None` when there was no such group.
    pub async fn delete_group(&self, gid: i64, actor: String, subject: String, now: i64) -> Result<Option<Group>, StorageError> {
        dispatch!(self, |store| store.delete_group(gid, actor, subject, now, &self.phones))
    }

    /// The groups `phone` belongs to that changed at or after `since`, oldest change first.
    pub async fn groups_of(&self, phone: String, since: i64, limit: usize) -> Result<Vec<Group>, StorageError> {
        dispatch!(self, |store| store.groups_of(phone, since, limit))
    }
}
