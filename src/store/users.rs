//! Users: who logged in, and the profile their contacts see.

use std::sync::Arc;

use crate::domain::account::{ChangedProfile, Profile, ProfileChange};
use crate::store::{Backend, Db, StorageError};

impl Db {
    /// The profile of a user.
    pub async fn profile_of(self: &Arc<Self>, user_id: i64) -> Result<Profile, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.profile_of(user_id).await,
            Backend::Postgres(pg) => pg.profile_of(user_id).await,
        }
    }

    /// Applies the change and bumps `ts`, and tells the users who have this one as a
    /// contact, in one transaction; returns the new profile and the photo it replaced.
    pub async fn change_profile(&self, user_id: i64, change: ProfileChange, now: i64) -> Result<ChangedProfile, StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.change_profile(user_id, change, now).await,
            Backend::Postgres(pg) => pg.change_profile(user_id, change, now).await,
        }
    }
}
