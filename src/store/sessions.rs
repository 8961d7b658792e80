//! Sessions: one per logged-in device, found by the SHA-256 of its access token (the
//! token itself is never stored), at most `MAX_DEVICES` per user.

use crate::domain::account::{Caller, PushRegistration};
use crate::store::records::DeviceSession;
use crate::store::{Db, StorageError};

impl Db {
    /// Replaces the push registration of the token's session (`None` removes it).
    pub async fn set_push(&self, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        dispatch!(self, |store| store.set_push(token_sha256, push))
    }

    /// The live session of a token, marked used; `None` for an unknown or expired token.
    pub async fn authenticate(&self, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        dispatch!(self, |store| store.authenticate(token_sha256, now_ms))
    }

    /// Ends the token's session, or with `all` every session of its user; returns how many.
    pub async fn end_sessions(&self, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        dispatch!(self, |store| store.end_sessions(token_sha256, all))
    }

    /// The caller's live sessions, most recently used first, as reply entries (no tokens).
    pub async fn sessions_of(&self, caller: Caller, now: i64) -> Result<Vec<DeviceSession>, StorageError> {
        dispatch!(self, |store| store.sessions_of(caller, now))
    }
}
