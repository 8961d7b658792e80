//! Users: who logged in, and the profile their contacts see.

use crate::domain::account::{ChangedProfile, Profile, ProfileChange};
use crate::store::{Db, StorageError};

impl Db {
    /// The profile of a user.
    pub async fn profile_of(&self, user_id: i64) -> Result<Profile, StorageError> {
        dispatch!(self, |store| store.profile_of(user_id))
    }

    /// Applies the change and bumps `ts`, and tells the users who have this one as a
    /// contact, in one transaction; returns the new profile and the photo it replaced.
    pub async fn change_profile(&self, user_id: i64, change: ProfileChange, now: i64) -> Result<ChangedProfile, StorageError> {
        dispatch!(self, |store| store.change_profile(user_id, change, now))
    }
}
