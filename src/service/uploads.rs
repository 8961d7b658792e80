//! `op=upload`: chat attachments, and the caller's own profile photo.

use serde_json::{Map, Value};
use std::sync::Arc;

use crate::domain::account::{Caller, Profile, ProfileChange};
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::images::{self, Photo};
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
            let photo = stored_photo(files, file).await?;
            ProfileChange { photo: Some(photo.0), thumbnail: Some(photo.1), ..ProfileChange::default() }
        }
    };
    Ok(db.change_profile(caller.user_id, change, db.clock().now()).await?)
}

/// Decodes and re-encodes a photo (off the request threads: it is CPU work) and keeps
/// it; returns its stored name and its thumbnail.
pub async fn stored_photo(files: &Files, file: UploadedFile) -> Result<(String, Vec<u8>), ApiError> {
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
