//! `op=upload`: chat attachments, and the caller's own profile photo; and the photos
//! every other service keeps (profiles, groups), through [`Files`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::domain::account::{Caller, ChangedProfile, Profile, ProfileChange};
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::images::{self, Photo, PhotoRefused};
use crate::domain::metrics;
use crate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};
use crate::store::files::FileStore;
use crate::store::Db;

/// The first file part of a multipart request, whatever its field name.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    /// The name the app gave the file; only its extension is used.
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// Already counted against the user's upload limits, before it was read (see
    /// [`UploadLimits::admit`]): it is not counted again.
    pub counted: bool,
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

/// Uploaded files and photos: where they are kept, what bounds them, and where they are
/// served from (the `urls.download` base the login reply gives).
pub struct Files {
    db: Arc<Db>,
    pub store: FileStore,
    pub download_base: String,
    pub limits: UploadLimits,
    /// Every photo is decoded through these.
    pub decodes: PhotoDecodes,
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
    /// Called before the file is read when its size is bounded beforehand (its body's
    /// `Content-Length`), and otherwise once it is read.
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

    /// Admits `file` from user `user_id` unless it was counted before it was read.
    async fn admit_file(&self, user_id: i64, file: &UploadedFile) -> Result<(), ApiError> {
        match file.counted {
            true => Ok(()),
            false => self.admit(user_id, file.bytes.len()).await,
        }
    }

    /// Forgets users whose budgets are full again.
    pub fn purge(&self) {
        self.files_per_user.purge();
        self.bytes_per_user.purge();
    }
}

/// A photo kept in the file store, for a row to refer to.
pub struct StoredPhoto {
    pub name: String,
    pub thumbnail: Vec<u8>,
    jpeg: Arc<Vec<u8>>,
}

/// What `op=upload` stored.
#[derive(Debug)]
pub enum Uploaded {
    /// A chat attachment, served at `url` (the download base alone when one was deleted).
    Attachment { url: String },
    /// The caller's own photo, set or removed: their profile as changed, and the photo's
    /// URL when they have one.
    OwnPhoto { profile: Profile, url: Option<String> },
}

impl Files {
    /// `download_base`: the `urls.download` the login reply gives; `shared` keeps the
    /// upload limits in buckets every instance shares (Redis).
    pub fn new(config: &Config, db: Arc<Db>, download_base: String, shared: Option<&Arc<SharedLimits>>) -> Result<Files, String> {
        Ok(Files {
            db,
            store: FileStore::open(config.files_directory())?,
            download_base,
            limits: UploadLimits::from_config(config, shared),
            decodes: PhotoDecodes::new(config.files.photo_decodes, config.files.photo_decode_queue, config.files.max_photo_pixels),
        })
    }

    fn url(&self, name: &str) -> String {
        format!("{}{name}", self.download_base)
    }

    /// Deletes stored file `name` (a photo no longer shown by whoever showed it) unless a
    /// user, a group or an attachment still refers to it. A failure is only logged: the
    /// file then stays, served only to who knows its name.
    pub async fn release(&self, name: &str) {
        match self.db.remove_file_unless_referenced(&self.store, name).await {
            Ok(true) => tracing::debug!("an unused photo file was deleted"),
            Ok(false) => {}
            Err(e) => tracing::warn!("an unused photo file could not be deleted: {e}"),
        }
    }

    /// `op=upload` of an attachment or of the caller's own photo (a group's photo is the
    /// groups service's).
    pub async fn upload(&self, caller: &Caller, request: UploadRequest) -> Result<Uploaded, ApiError> {
        if !request.profile {
            // A chat attachment: kept as sent, served under a safe content type.
            let url = match (request.delete, request.file) {
                (true, _) => self.download_base.clone(),
                (false, None) => return Err(missing_file()),
                (false, Some(file)) => {
                    self.limits.admit_file(caller.user_id, &file).await?;
                    let bytes = Arc::new(file.bytes);
                    let name = self.store.put(Arc::clone(&bytes), images::stored_extension(&file.file_name)).await?;
                    // Recorded, so that it is never taken for an unused photo of the same bytes.
                    self.db.keep_attachment(&name).await?;
                    self.store.restore(&name, bytes).await?;
                    self.url(&name)
                }
            };
            return Ok(Uploaded::Attachment { url });
        }
        let profile = self.set_own_photo(caller, request.delete, request.file).await?;
        let url = (!profile.photo.is_empty()).then(|| self.url(&profile.photo));
        Ok(Uploaded::OwnPhoto { profile, url })
    }

    /// Stores `file` as the caller's photo, or with `delete` removes the photo.
    async fn set_own_photo(&self, caller: &Caller, delete: bool, file: Option<UploadedFile>) -> Result<Profile, ApiError> {
        let stored = match (delete, file) {
            (true, _) => None,
            (false, None) => return Err(missing_file()),
            (false, Some(file)) => Some(self.stored_photo(caller, file).await?),
        };
        let change = match &stored {
            None => ProfileChange { photo: Some(String::new()), ..ProfileChange::default() },
            Some(photo) => {
                ProfileChange { photo: Some(photo.name.clone()), thumbnail: Some(photo.thumbnail.clone()), ..ProfileChange::default() }
            }
        };
        self.change_photo(caller, change, stored.as_ref()).await
    }

    /// Applies a profile change that sets (or removes) the photo: the photo `stored` for it
    /// is kept, and the one it replaces deleted unless someone else shows it. The store
    /// says which photo the change replaced: of two changes at once, each frees the photo
    /// it replaced itself, so none is left behind and none freed twice.
    pub async fn change_photo(&self, caller: &Caller, change: ProfileChange, stored: Option<&StoredPhoto>) -> Result<Profile, ApiError> {
        let ChangedProfile { profile, replaced_photo } = self.db.change_profile(caller.user_id, change, self.db.clock().now()).await?;
        if let Some(stored) = stored {
            self.keep(stored).await?;
        }
        if replaced_photo != profile.photo {
            self.release(&replaced_photo).await;
        }
        Ok(profile)
    }

    /// Decodes and re-encodes a photo `caller` uploads (off the request threads: it is CPU
    /// work, bounded by [`PhotoDecodes`]) and keeps it; returns its stored name and its thumbnail. It counts against the
    /// caller's upload limits before it is decoded.
    pub async fn stored_photo(&self, caller: &Caller, file: UploadedFile) -> Result<StoredPhoto, ApiError> {
        self.limits.admit_file(caller.user_id, &file).await?;
        let Photo { jpeg, thumbnail } = self.decodes.decode(file.bytes).await?;
        let jpeg = Arc::new(jpeg);
        let name = self.store.put(Arc::clone(&jpeg), "jpg").await?;
        Ok(StoredPhoto { name, thumbnail, jpeg })
    }

    /// Called once the row showing `stored` is committed: a deletion of an unused file of
    /// the same bytes may have come in between (see `store::files`), and is undone, unless
    /// the photo was replaced again since.
    pub async fn keep(&self, stored: &StoredPhoto) -> Result<(), ApiError> {
        Ok(self.db.restore_file_if_referenced(&self.store, &stored.name, Arc::clone(&stored.jpeg)).await?)
    }
}

/// The photo decodes: a decode holds the memory of every pixel while it runs, so only
/// `at_once` run at a time, and only `max_waiting` more may wait for their turn.
pub struct PhotoDecodes {
    turns: Arc<Semaphore>,
    at_once: usize,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    max_pixels: u64,
}

/// A decode's turn, given back when dropped.
pub struct DecodeTurn {
    _permit: OwnedSemaphorePermit,
}

impl Drop for DecodeTurn {
    fn drop(&mut self) {
        metrics::PHOTO_DECODES_RUNNING.dec();
    }
}

/// Counts a request among the waiting ones while it exists.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        metrics::PHOTO_DECODES_WAITING.dec();
    }
}

impl PhotoDecodes {
    pub fn new(at_once: usize, max_waiting: usize, max_pixels: u64) -> PhotoDecodes {
        let at_once = at_once.max(1);
        PhotoDecodes { turns: Arc::new(Semaphore::new(at_once)), at_once, waiting: Arc::default(), max_waiting, max_pixels }
    }

    /// Turns taken now (decodes running).
    pub fn running(&self) -> usize {
        self.at_once - self.turns.available_permits()
    }

    /// Requests waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits for a decode's turn; `BUSY` when `max_waiting` requests already wait.
    pub async fn turn(&self) -> Result<DecodeTurn, ApiError> {
        let permit = match Arc::clone(&self.turns).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(ApiError::busy(1, "too many photos are being processed; retry"));
                }
                metrics::PHOTO_DECODES_WAITING.inc();
                let _waiting = Waiting(Arc::clone(&self.waiting));
                Arc::clone(&self.turns).acquire_owned().await.map_err(|_| ApiError::internal())?
            }
        };
        metrics::PHOTO_DECODES_RUNNING.inc();
        Ok(DecodeTurn { _permit: permit })
    }

    /// Decodes a photo in its turn, on a blocking thread that keeps the turn until the
    /// decode ends, even when the request gave up waiting for it.
    async fn decode(&self, bytes: Vec<u8>) -> Result<Photo, ApiError> {
        let turn = self.turn().await?;
        let max_pixels = self.max_pixels;
        let decoded = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            images::photo_from_upload(&bytes, max_pixels)
        })
        .await
        .map_err(|_| ApiError::internal())?;
        decoded.map_err(|refused| match refused {
            PhotoRefused::NotAnImage => ApiError::new(ErrorCode::BadImage, "the photo is not a JPEG, PNG, GIF or WebP image"),
            PhotoRefused::TooManyPixels { width, height } => ApiError::new(
                ErrorCode::ImageTooLarge,
                format!("the photo has {width} × {height} pixels, more than {} in all", self.max_pixels),
            ),
        })
    }
}

fn missing_file() -> ApiError {
    ApiError::new(ErrorCode::MissingFile, "a file part is required")
}
