//! Sessions: one per logged-in device, found by the SHA-256 of its access token (the
//! token itself is never stored), at most `MAX_DEVICES` per user.

use std::sync::Arc;

use crate::domain::account::{Caller, PushRegistration};
use crate::store::records::DeviceSession;
use crate::store::{Backend, Db, StorageError};

impl Db {
    /// Replaces the push registration of the token's session (`None` removes it).
    pub async fn set_push(&self, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.set_push(token_sha256, push).await,
            Backend::Postgres(pg) => pg.set_push(token_sha256, push).await,
        }
    }

    /// The live session of a token, marked used; `None` for an unknown or expired token.
    pub async fn authenticate(&self, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.authenticate(token_sha256, now_ms).await,
            Backend::Postgres(pg) => pg.authenticate(token_sha256, now_ms).await,
        }
    }

    /// Ends the token's session, or with `all` every session of its user; returns how many.
    pub async fn end_sessions(&self, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.end_sessions(token_sha256, all).await,
            Backend::Postgres(pg) => pg.end_sessions(token_sha256, all).await,
        }
    }

    /// The caller's live sessions, most recently used first, as reply entries (no tokens).
    pub async fn sessions_of(self: &Arc<Self>, caller: Caller, now: i64) -> Result<Vec<DeviceSession>, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.sessions_of(caller, now).await,
            Backend::Postgres(pg) => pg.sessions_of(caller, now).await,
        }
    }
}
