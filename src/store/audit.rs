//! The audit trail: security events per address (by its phone hash), kept for
//! `AUDIT_RETENTION_DAYS` and read by operators.

use crate::store::records::AuditEvent;
pub use crate::store::records::{
    ACCOUNT_DELETED, ADDRESS_LINKED, ADDRESS_UNLINKED, DELIVERY_FAILED, LOCKED_OUT, LOGIN, LOGIN_FAILED, MAX_EVENTS, OPERATOR_AUTH_FAILED,
    OPERATOR_TRAIL, SESSIONS_REVOKED,
};
use crate::store::{Db, StorageError};

/// An operator looked at a user's data (`/admin/users`, `/admin/events`): in the user's
/// trail the detail names the operator and what they read; in the operator trail, the
/// user's id and masked address as well.
pub const OPERATOR_LOOKUP: &str = "operator_lookup";

impl Db {
    /// Records a security event of `address`.
    pub async fn audit(&self, address: &str, event: &'static str, detail: String) -> Result<(), StorageError> {
        let (address_hash, now) = (self.phone_hash(address), self.clock().now());
        dispatch!(self, |store| store.audit(address_hash, event, detail, now))
    }

    /// The events of `address`, newest first, at most [`MAX_EVENTS`].
    pub async fn audit_events(&self, address: &str) -> Result<Vec<AuditEvent>, StorageError> {
        let address_hash = self.phone_hash(address);
        dispatch!(self, |store| store.audit_events(address_hash))
    }

    /// Deletes the events older than `before` (unix seconds); returns how many.
    pub async fn purge_audit(&self, before: i64) -> Result<usize, StorageError> {
        dispatch!(self, |store| store.purge_audit(before))
    }
}
