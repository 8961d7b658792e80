//! What users keep: their sessions, their address books, the notices sent to them and
//! their files.

use serde::{Deserialize, Serialize};

use super::values::unless_empty;

/// Sessions (devices) per user.
#[derive(Clone, Deserialize, Serialize)]
pub struct SessionSettings {
    /// Live sessions per user; a login beyond it evicts the least recently used.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
}

/// Contact sync.
#[derive(Clone, Deserialize, Serialize)]
pub struct ContactSettings {
    /// Most phones in one `getcontacts` / `delcontacts` request (`TOOMANY` beyond).
    #[serde(default = "defaults::max_contacts_per_request", rename = "max_contacts_per_request")]
    pub max_per_request: usize,
    /// Most contacts one user may have stored (`TOOMANY` beyond).
    #[serde(default = "defaults::max_contacts_per_user", rename = "max_contacts_per_user")]
    pub max_per_user: usize,
}

/// The notices (contact joined, profile and group changes) sent through upstream.
#[derive(Clone, Deserialize, Serialize)]
pub struct OutboxSettings {
    /// Upstream address that the notices come from.
    #[serde(default = "defaults::system_address")]
    pub system_address: String,
    /// First retry delay of a failed outbox message; doubles per attempt up to an hour.
    #[serde(default = "defaults::outbox_retry_secs", rename = "outbox_retry_secs")]
    pub retry_secs: u64,
}

/// Uploaded files and photos.
#[derive(Clone, Deserialize, Serialize)]
pub struct FileSettings {
    /// Where uploaded photos and attachments are kept (served at `/files/`); unset: a
    /// `files` directory beside DATABASE_PATH (see `Config::files_directory`).
    #[serde(default, deserialize_with = "unless_empty", rename = "files_dir")]
    pub dir: Option<String>,
    /// Largest file part of `upload` (and of `profile` with a photo).
    #[serde(default = "defaults::max_upload_bytes")]
    pub max_upload_bytes: usize,
    /// Largest photo, in pixels (width × height), that is decoded; larger ones get
    /// `IMAGETOOLARGE`, refused from their header.
    #[serde(default = "defaults::max_photo_pixels")]
    pub max_photo_pixels: u64,
    /// Photos decoded at once (each may take 4 bytes a pixel while it runs).
    #[serde(default = "defaults::photo_decodes")]
    pub photo_decodes: usize,
    /// Photos that may wait for a decode's turn; one more gets `BUSY`.
    #[serde(default = "defaults::photo_decode_queue")]
    pub photo_decode_queue: usize,
    /// Uploads whose file part comes before their token, read at once (their file is held
    /// in memory until the token is checked); one more gets `BUSY`.
    #[serde(default = "defaults::max_uploads_before_token")]
    pub max_uploads_before_token: usize,
    /// Seconds within which the rest of a form must arrive once its file part is being
    /// read before its token; a slower one loses its place and gets `TIMEOUT`.
    #[serde(default = "defaults::upload_before_token_timeout_secs")]
    pub upload_before_token_timeout_secs: u64,
    /// Uploads (multipart requests of ops that take a file) one user may send at once;
    /// one more gets `RATELIMIT` before its file is read.
    #[serde(default = "defaults::max_concurrent_uploads_per_user")]
    pub max_concurrent_uploads_per_user: usize,
}

mod defaults {
    pub fn max_devices() -> usize {
        8
    }
    pub fn max_contacts_per_request() -> usize {
        5000
    }
    pub fn max_contacts_per_user() -> usize {
        10_000
    }
    pub fn system_address() -> String {
        "system".into()
    }
    pub fn outbox_retry_secs() -> u64 {
        5
    }
    pub fn max_upload_bytes() -> usize {
        16 * 1024 * 1024
    }
    /// The full resolution of the 48 and 50 megapixel phone cameras (8160 × 6120).
    pub fn max_photo_pixels() -> u64 {
        50_000_000
    }
    pub fn photo_decodes() -> usize {
        2
    }
    pub fn photo_decode_queue() -> usize {
        16
    }
    pub fn max_uploads_before_token() -> usize {
        4
    }
    /// 16 MiB in 15 seconds takes about 9 Mbit/s; no app sends its file before its token.
    pub fn upload_before_token_timeout_secs() -> u64 {
        15
    }
    /// The apps upload one file at a time; a few attachments sent together still fit.
    pub fn max_concurrent_uploads_per_user() -> usize {
        4
    }
}
