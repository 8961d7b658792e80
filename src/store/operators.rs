//! What the operator API reads and changes: users found by address, upstream uid or
//! id, their sessions, and revoking them.

use crate::store::records::OperatorSession;
pub use crate::store::records::{UserKey, UserRecord, SESSION_ID_CHARS};
use crate::store::{Backend, Db, StorageError};

impl Db {
    /// The user an operator names, if there is one.
    pub async fn find_user(&self, key: UserKey) -> Result<Option<UserRecord>, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.find_user(key).await,
            Backend::Postgres(pg) => pg.find_user(key).await,
        }
    }

    /// The user's live sessions for an operator, most recently used first, each named by
    /// its session id.
    pub async fn user_sessions(&self, user_id: i64) -> Result<Vec<OperatorSession>, StorageError> {
        let now = self.clock().now();
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.user_sessions(user_id, now).await,
            Backend::Postgres(pg) => pg.user_sessions(user_id, now).await,
        }
    }

    /// Ends one session of the user, named by its id, or with `None` all of them; the
    /// devices' next call answers AUTHFAIL. Returns how many ended.
    pub async fn revoke_sessions(&self, user_id: i64, session: Option<String>) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.revoke_sessions(user_id, session).await,
            Backend::Postgres(pg) => pg.revoke_sessions(user_id, session).await,
        }
    }
}
