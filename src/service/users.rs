//! `op=me` and `op=profile`: the caller's own profile.

use std::sync::Arc;

use crate::domain::account::{
    refuse_control_characters, Caller, Profile, ProfileChange, MAX_NAME_CHARS, MAX_PHOTO_CHARS, MAX_STATUS_CHARS,
};
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::links::{Linked, Links};
use crate::service::uploads::{Files, UploadedFile};
use crate::store::Db;

/// The caller's own profile: showing it and changing it.
pub struct Users {
    db: Arc<Db>,
    links: Arc<Links>,
    /// Where a photo sent with a profile change is kept.
    files: Arc<Files>,
}

/// What `op=me` shows: the caller's own profile (its `uid` the upstream one) and their
/// linked addresses.
#[derive(Debug)]
pub struct Me {
    pub profile: Profile,
    pub linked: Vec<Linked>,
}

/// The fields of `op=profile` as sent; `None` leaves the stored value.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfileFields<'a> {
    pub name: Option<&'a str>,
    pub status: Option<&'a str>,
    pub photo: Option<&'a str>,
}

impl Users {
    pub fn new(db: Arc<Db>, links: Arc<Links>, files: Arc<Files>) -> Users {
        Users { db, links, files }
    }

    /// `op=me`.
    pub async fn me(&self, caller: &Caller) -> Result<Me, ApiError> {
        let user_id = caller.user_id;
        let profile = self.db.profile_of(user_id).await?;
        Ok(Me { profile, linked: self.links.linked(user_id).await? })
    }

    /// `op=profile`: changes `name`, `status` and/or `photo`; a photo sent as a file part
    /// (`uploaded`) is stored as `upload` stores it, in the same change. Answers the profile
    /// as changed.
    pub async fn change_profile(
        &self,
        caller: &Caller,
        fields: ProfileFields<'_>,
        uploaded: Option<UploadedFile>,
    ) -> Result<Profile, ApiError> {
        let field = |name: &str, value: Option<&str>, max: usize| -> Result<Option<String>, ApiError> {
            let Some(value) = value.map(|v| v.trim()) else { return Ok(None) };
            if value.chars().count() > max {
                return Err(ApiError::new(ErrorCode::BadParam, format!("{name} must be at most {max} characters")));
            }
            Ok(Some(value.to_string()))
        };
        let mut change = ProfileChange {
            name: field("name", fields.name, MAX_NAME_CHARS)?,
            status: field("status", fields.status, MAX_STATUS_CHARS)?,
            photo: field("photo", fields.photo, MAX_PHOTO_CHARS)?,
            thumbnail: None,
        };
        if change.name.is_none() && change.status.is_none() && change.photo.is_none() && uploaded.is_none() {
            return Err(ApiError::new(ErrorCode::BadParam, "name, status or photo is required"));
        }
        if change.photo.as_deref().is_some_and(|p| !p.is_empty() && !p.starts_with("https://") && !p.starts_with("http://")) {
            return Err(ApiError::new(ErrorCode::BadParam, "photo must be an http(s) URL"));
        }
        for (field, text) in [("name", &change.name), ("status", &change.status), ("photo", &change.photo)] {
            refuse_control_characters(field, text.as_deref().unwrap_or_default())?;
        }
        let stored = match uploaded {
            Some(file) => Some(self.files.stored_photo(caller, file).await?),
            None => None,
        };
        if let Some(stored) = &stored {
            (change.photo, change.thumbnail) = (Some(stored.name.clone()), Some(stored.thumbnail.clone()));
        }
        if change.photo.is_none() {
            return Ok(self.db.change_profile(caller.user_id, change, self.db.clock().now()).await?.profile);
        }
        self.files.change_photo(caller, change, stored.as_ref()).await
    }
}
