//! Users and their sessions as the service sees them: profiles, the rule for every
//! stored text, and how access tokens are recognised without being stored.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::address::Address;
use crate::domain::error::{ApiError, ErrorCode};

/// Hex SHA-256 of an access token: the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub token_sha256: String,
}

/// A session ended to make room for a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub appid: String,
    pub device: String,
}

pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_STATUS_CHARS: usize = 140;
pub const MAX_PHOTO_CHARS: usize = 512;

/// The one rule for every text the service stores and shows to others: no control
/// characters (NUL, ESC...) and no bidirectional overrides, which make a name display as
/// something else than it is.
pub fn refuse_control_characters(field: &str, text: &str) -> Result<(), ApiError> {
    let bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    match text.chars().any(|c| c.is_control() || bidi(c)) {
        true => Err(ApiError::new(ErrorCode::BadParam, format!("{field} must not contain control or bidirectional formatting characters"))),
        false => Ok(()),
    }
}

/// What a user shows to others (and to themselves with `op=me`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub address: String,
    pub uid: String,
    pub name: String,
    pub status: String,
    pub photo: String,
    /// Unix seconds of the last change.
    pub ts: i64,
    /// JPEG thumbnail of a photo uploaded to the service.
    pub thumbnail: Option<Vec<u8>>,
}

impl Profile {
    /// The public fields: `phone` (or `email`), `name`, `status`, `photo`, `ts`.
    pub fn public_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert(Address::from_stored(&self.address).field().into(), self.address.clone().into());
        fields.insert("name".into(), self.name.clone().into());
        fields.insert("status".into(), self.status.clone().into());
        fields.insert("photo".into(), self.photo.clone().into());
        fields.insert("ts".into(), self.ts.into());
        if let Some(thumbnail) = &self.thumbnail {
            fields.insert("tn".into(), thumbnail_field(thumbnail));
        }
        fields
    }
}

/// What a login reply shows of the user's own profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnProfile {
    pub name: String,
    pub status: String,
    pub photo: String,
    pub thumbnail: Option<Vec<u8>>,
}

/// Where a device receives push notifications (`op=setnotify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The push service's token for the device (`notifytoken`).
    pub token: String,
    /// The push service's sender id (`fcmid`).
    pub sender: Option<String>,
    /// The platform SDK's device type (`dt`).
    pub device_type: Option<String>,
}

/// Fields of `op=profile`; `None` leaves the stored value.
#[derive(Debug, Default, Clone)]
pub struct ProfileChange {
    pub name: Option<String>,
    pub status: Option<String>,
    pub photo: Option<String>,
    /// The new photo's thumbnail; only read when `photo` changes, and `None` then removes it.
    pub thumbnail: Option<Vec<u8>>,
}

/// A profile as a change left it, and the photo it showed just before: read in the
/// change's own transaction, so that of two changes at once each learns the photo it
/// replaced, and every replaced photo is freed exactly once.
#[derive(Debug, Clone)]
pub struct ChangedProfile {
    pub profile: Profile,
    pub replaced_photo: String,
}

/// A thumbnail as the apps read it (`tn`): standard base64 of the JPEG.
pub fn thumbnail_field(jpeg: &[u8]) -> Value {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(jpeg).into()
}
