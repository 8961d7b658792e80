//! `op=upload`: chat attachments, and the caller's own profile photo.

use serde_json::{Map, Value};
use std::sync::Arc;

use crate::config::Config;
use crate::domain::account::{Caller, Profile, ProfileChange};
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::images::{self, Photo};
use crate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};
use crate::store::files::FileStore;
use crate::store::Db;

/// The first file part of a multipart request, whatever its field name.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    /// The name the app gave the file; only its extension is used.
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// The fields of `op=upload` as the apps send them.
#[derive(Debug, Default)]
pub struct UploadRequest {
    /// A profile photo (`profile=1`) rather than a chat attachment.
    pub profile: bool,
    /// A group's photo when above 0.
    pub gid: i64,
    /// Remove the photo instead of setting it.
    pub delete: bool,
    pub file: Option<UploadedFile>,
}

/// Where stored files are served from: the `urls.download` base the login reply gives.
pub struct Files {
    pub store: FileStore,
    pub download_base: String,
    pub limits: UploadLimits,
}

/// What bounds what one user may put in `FILES_DIR`: files per hour and bytes per day,
/// counted before anything is decoded or written. With `REDIS_URL` every instance
/// counts in the same buckets.
pub struct UploadLimits {
    files_per_user: KeyedLimit,
    bytes_per_user: KeyedLimit,
}

impl UploadLimits {
    pub fn from_config(config: &Config, shared: Option<&Arc<SharedLimits>>) -> UploadLimits {
        UploadLimits {
            files_per_user: KeyedLimit::per_hour(config.limit.uploads_per_user_per_hour).named("uploads_per_user").shared(shared),
            bytes_per_user: KeyedLimit::per_day(config.limit.upload_bytes_per_user_per_day).named("upload_bytes_per_user").shared(shared),
        }
    }

    /// Admits one file of `bytes` from user `user_id`, or answers `RATELIMIT` with the wait.
    pub async fn admit(&self, user_id: i64, bytes: usize) -> Result<(), ApiError> {
        let user = user_id.to_string();
        self.files_per_user.check(&user).await.map_err(|refusal| match refusal {
            Refusal::Wait(wait) => {
                ApiError::rate_limited(wait, format!("too many uploads by this user this hour; retry in {wait} seconds"))
            }
            other => other.into(),
        })?;
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.bytes_per_user.check_n(&user, bytes).await.map_err(|refusal| match refusal {
            Refusal::Wait(wait) => {
                ApiError::rate_limited(wait, format!("this user's upload volume for today is spent; retry in {wait} seconds"))
            }
            Refusal::TooMany => ApiError::new(ErrorCode::TooMany, "the file is larger than a user may upload in a day"),
            Refusal::Unavailable => refusal.into(),
        })
    }

    /// Forgets users whose budgets are full again.
    pub fn purge(&self) {
        self.files_per_user.purge();
        self.bytes_per_user.purge();
    }
}

impl Files {
    fn url(&self, name: &str) -> String {
        format!("{}{name}", self.download_base)
    }
}

/// `op=upload` of an attachment or of the caller's own photo (a group's photo is the
/// groups service's). Every reply carries `profile`, `gid` and `phone`, as the
/// reference's did.
pub async fn upload(db: &Arc<Db>, files: &Files, caller: &Caller, request: UploadRequest) -> Result<Map<String, Value>, ApiError> {
    let mut reply = Map::new();
    reply.insert("profile".into(), i64::from(request.profile).into());
    reply.insert("gid".into(), request.gid.max(0).into());
    reply.insert("phone".into(), "".into());
    if !request.profile {
        // A chat attachment: kept as sent, served under a safe content type.
        let url = match (request.delete, request.file) {
            (true, _) => files.download_base.clone(),
            (false, None) => return Err(missing_file()),
            (false, Some(file)) => {
                files.limits.admit(caller.user_id, file.bytes.len()).await?;
                let name = files.store.put(file.bytes, images::stored_extension(&file.file_name)).await?;
                files.url(&name)
            }
        };
        reply.insert("file".into(), url.clone().into());
        reply.insert("url".into(), url.into());
        return Ok(reply);
    }
    let profile = set_own_photo(db, files, caller, request.delete, request.file).await?;
    if !profile.photo.is_empty() {
        reply.insert("file".into(), files.url(&profile.photo).into());
    }
    reply.extend(photo_fields(&profile));
    Ok(reply)
}

/// Stores `file` as the caller's photo, or with `delete` removes the photo.
async fn set_own_photo(
    db: &Arc<Db>,
    files: &Files,
    caller: &Caller,
    delete: bool,
    file: Option<UploadedFile>,
) -> Result<Profile, ApiError> {
    let change = match (delete, file) {
        (true, _) => ProfileChange { photo: Some(String::new()), ..ProfileChange::default() },
        (false, None) => return Err(missing_file()),
        (false, Some(file)) => {
            let photo = stored_photo(files, caller, file).await?;
            ProfileChange { photo: Some(photo.0), thumbnail: Some(photo.1), ..ProfileChange::default() }
        }
    };
    Ok(db.change_profile(caller.user_id, change, db.clock().now()).await?)
}

/// Decodes and re-encodes a photo `caller` uploads (off the request threads: it is CPU
/// work) and keeps it; returns its stored name and its thumbnail. It counts against the
/// caller's upload limits before it is decoded.
pub async fn stored_photo(files: &Files, caller: &Caller, file: UploadedFile) -> Result<(String, Vec<u8>), ApiError> {
    files.limits.admit(caller.user_id, file.bytes.len()).await?;
    let photo = tokio::task::spawn_blocking(move || images::photo_from_upload(&file.bytes))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|_| ApiError::new(ErrorCode::BadImage, "the photo is not a JPEG, PNG, GIF or WebP image"))?;
    let Photo { jpeg, thumbnail } = photo;
    let name = files.store.put(jpeg, "jpg").await?;
    Ok((name, thumbnail))
}

/// A profile as the 2021 apps rebuild it after an upload: `name`, `status`, `photo`,
/// `ts`, `tn` and the caller's address.
fn photo_fields(profile: &Profile) -> Map<String, Value> {
    let mut fields = profile.public_fields();
    fields.insert("gid".into(), 0.into());
    fields
}

fn missing_file() -> ApiError {
    ApiError::new(ErrorCode::MissingFile, "a file part is required")
}
