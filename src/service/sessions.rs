//! `op=logout`, `op=devices` and `op=setnotify`.

use std::sync::Arc;

use crate::domain::account::{refuse_control_characters, Caller, PushRegistration};
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::links::{Linked, Links};
use crate::store::records::DeviceSession;
use crate::store::Db;

/// A user's sessions: ending them, listing them, and their push registrations.
pub struct Sessions {
    db: Arc<Db>,
    links: Arc<Links>,
}

/// What `op=devices` shows: the user's live sessions (as the store describes them) and
/// their linked addresses.
#[derive(Debug)]
pub struct Devices {
    pub sessions: Vec<DeviceSession>,
    pub linked: Vec<Linked>,
}

/// The fields of `op=setnotify` as the 2021 Android app sends them.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetNotify<'a> {
    pub notify_token: Option<&'a str>,
    pub fcm_id: Option<&'a str>,
    pub device_type: Option<&'a str>,
}

/// Push tokens are opaque but bounded: FCM's are about 160 characters, APNs' 64.
const MAX_PUSH_TOKEN_CHARS: usize = 4096;
const MAX_PUSH_FIELD_CHARS: usize = 256;

impl Sessions {
    pub fn new(db: Arc<Db>, links: Arc<Links>) -> Sessions {
        Sessions { db, links }
    }

    /// `op=logout`: ends the token's session, or with `all` every session of its user.
    /// An unknown or already ended token is not an error: the app's goal is reached.
    /// Answers how many sessions ended.
    pub async fn logout(&self, token_sha256: String, all: bool) -> Result<usize, ApiError> {
        Ok(self.db.end_sessions(token_sha256, all).await?)
    }

    /// `op=devices`.
    pub async fn devices(&self, caller: &Caller) -> Result<Devices, ApiError> {
        let sessions = self.db.sessions_of(caller.clone(), self.db.clock().now()).await?;
        Ok(Devices { sessions, linked: self.links.linked(caller.user_id).await? })
    }

    /// `op=setnotify`: keeps the device's push registration with the caller's session,
    /// replacing the one before; an empty `notifytoken` removes it. Logging out removes it
    /// with the session.
    pub async fn set_notify(&self, caller: &Caller, fields: SetNotify<'_>) -> Result<(), ApiError> {
        let text = |name: &str, value: Option<&str>, max: usize| -> Result<Option<String>, ApiError> {
            let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
            if value.chars().count() > max {
                return Err(ApiError::new(ErrorCode::BadParam, format!("{name} must be at most {max} characters")));
            }
            refuse_control_characters(name, value)?;
            Ok(Some(value.to_string()))
        };
        let registration = match text("notifytoken", fields.notify_token, MAX_PUSH_TOKEN_CHARS)? {
            Some(token) => Some(PushRegistration {
                token,
                sender: text("fcmid", fields.fcm_id, MAX_PUSH_FIELD_CHARS)?,
                device_type: text("dt", fields.device_type, MAX_PUSH_FIELD_CHARS)?,
            }),
            None => None,
        };
        self.db.set_push(caller.token_sha256.clone(), registration).await?;
        Ok(())
    }
}
