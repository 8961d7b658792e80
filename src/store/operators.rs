//! What the operator API reads and changes: users found by address, upstream uid or
//! id, their sessions, and revoking them.

use crate::store::records::OperatorSession;
pub use crate::store::records::{UserKey, UserRecord, SESSION_ID_CHARS};
use crate::store::{Db, StorageError};

impl Db {
    /// The user an operator names, if there is one.
    pub async fn find_user(&self, key: UserKey) -> Result<Option<UserRecord>, StorageError> {
        dispatch!(self, |store| store.find_user(key))
    }

    /// The user's live sessions for an operator, most recently used first, each named by
    /// its session id.
    pub async fn user_sessions(&self, user_id: i64) -> Result<Vec<OperatorSession>, StorageError> {
        let now = self.clock().now();
        dispatch!(self, |store| store.user_sessions(user_id, now))
    }

    /// Ends one session of the user, named by its id, or with `None` all of them; the
    /// devices' next call answers AUTHFAIL. Returns how many ended.
    pub async fn revoke_sessions(&self, user_id: i64, session: Option<String>) -> Result<usize, StorageError> {
        dispatch!(self, |store| store.revoke_sessions(user_id, session))
    }
}
