//! The users table: who logged in, and the profile their contacts see
//! (`op=profile` changes it, `op=me` shows it).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::address::Address;
use crate::error::ApiError;
use crate::http::Params;
use crate::sessions::Caller;
use crate::storage::{self, Db};

pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_STATUS_CHARS: usize = 140;
pub const MAX_PHOTO_CHARS: usize = 512;

/// The one rule for every text the service stores and shows to others: no control
/// characters (NUL, ESC...) and no bidirectional overrides, which make a name display as
/// something else than it is.
pub fn refuse_control_characters(field: &str, text: &str) -> Result<(), ApiError> {
    let bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    match text.chars().any(|c| c.is_control() || bidi(c)) {
        true => Err(ApiError::new("BADPARAM", format!("{field} must not contain control or bidirectional formatting characters"))),
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
}

/// Columns for [`Profile::from_row`], for a query over `users u`.
pub const PROFILE_COLUMNS: &str = "u.address, u.uid, u.name, u.status, u.photo, u.ts";

impl Profile {
    pub fn from_row(row: &Row) -> rusqlite::Result<Profile> {
        Ok(Profile { address: row.get(0)?, uid: row.get(1)?, name: row.get(2)?, status: row.get(3)?, photo: row.get(4)?, ts: row.get(5)? })
    }

    /// The public fields: `phone` (or `email`), `name`, `status`, `photo`, `ts`.
    pub fn public_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert(stored_address(&self.address).field().into(), self.address.clone().into());
        fields.insert("name".into(), self.name.clone().into());
        fields.insert("status".into(), self.status.clone().into());
        fields.insert("photo".into(), self.photo.clone().into());
        fields.insert("ts".into(), self.ts.into());
        fields
    }
}

/// Stored addresses are already normalised; e-mail addresses are the ones with an `@`.
pub fn stored_address(address: &str) -> Address {
    if address.contains('@') {
        Address::Email(address.to_string())
    } else {
        Address::Phone(address.to_string())
    }
}

/// What a login reply shows of the user's own profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnProfile {
    pub name: String,
    pub status: String,
    pub photo: String,
}

/// Creates the user or records a new login; a non-empty `name` replaces the stored one.
/// Returns the local id, whether this was the user's first login, and the profile.
pub fn upsert_at_login(conn: &Connection, address: &str, uid: &str, name: &str, now: i64) -> rusqlite::Result<(i64, bool, OwnProfile)> {
    let existing: Option<i64> =
        conn.prepare_cached("SELECT id FROM users WHERE address = ?1")?.query_row([address], |r| r.get(0)).optional()?;
    match existing {
        Some(id) => {
            // A changed name is a profile change: bump ts so contacts' next sync sees it.
            let profile = conn
                .prepare_cached(
                    "UPDATE users SET uid = ?2, last_login = ?4,
                         ts = CASE WHEN ?3 <> '' AND ?3 <> name THEN ?4 ELSE ts END,
                         name = CASE WHEN ?3 = '' THEN name ELSE ?3 END
                     WHERE id = ?1
                     RETURNING name, status, photo",
                )?
                .query_row(params![id, uid, name, now], |r| Ok(OwnProfile { name: r.get(0)?, status: r.get(1)?, photo: r.get(2)? }))?;
            Ok((id, false, profile))
        }
        None => {
            conn.prepare_cached("INSERT INTO users (address, uid, name, created_at, last_login, ts) VALUES (?1, ?2, ?3, ?4, ?4, ?4)")?
                .execute(params![address, uid, name, now])?;
            Ok((conn.last_insert_rowid(), true, OwnProfile { name: name.to_string(), ..OwnProfile::default() }))
        }
    }
}

pub fn profile(conn: &Connection, user_id: i64) -> rusqlite::Result<Profile> {
    conn.query_row(&format!("SELECT {PROFILE_COLUMNS} FROM users u WHERE u.id = ?1"), [user_id], Profile::from_row)
}

/// Fields of `op=profile`; `None` leaves the stored value.
#[derive(Debug, Default)]
pub struct ProfileChange {
    pub name: Option<String>,
    pub status: Option<String>,
    pub photo: Option<String>,
}

/// Applies the change and bumps `ts`; returns the new profile.
pub fn update_profile(conn: &mut Connection, user_id: i64, change: &ProfileChange, now: i64) -> rusqlite::Result<Profile> {
    storage::atomically(conn, |tx| {
        tx.prepare_cached(
            "UPDATE users SET name = coalesce(?2, name), status = coalesce(?3, status), photo = coalesce(?4, photo), ts = ?5 WHERE id = ?1",
        )?
        .execute(params![user_id, change.name, change.status, change.photo, now])?;
        profile(tx, user_id)
    })
}

/// `op=me`: the caller's own profile, with the upstream uid.
pub async fn me(db: &Arc<Db>, caller: &Caller) -> Result<Map<String, Value>, ApiError> {
    let user_id = caller.user_id;
    let own = db.read(move |conn| profile(conn, user_id)).await?;
    Ok(profile_reply(own))
}

/// `op=profile`: changes `name`, `status` and/or `photo`.
pub async fn change_profile(db: &Arc<Db>, caller: &Caller, params: &Params) -> Result<Map<String, Value>, ApiError> {
    let field = |name: &str, max: usize| -> Result<Option<String>, ApiError> {
        let Some(value) = params.get(name).map(|v| v.trim()) else { return Ok(None) };
        if value.chars().count() > max {
            return Err(ApiError::new("BADPARAM", format!("{name} must be at most {max} characters")));
        }
        Ok(Some(value.to_string()))
    };
    let change = ProfileChange {
        name: field("name", MAX_NAME_CHARS)?,
        status: field("status", MAX_STATUS_CHARS)?,
        photo: field("photo", MAX_PHOTO_CHARS)?,
    };
    if change.name.is_none() && change.status.is_none() && change.photo.is_none() {
        return Err(ApiError::new("BADPARAM", "name, status or photo is required"));
    }
    if change.photo.as_deref().is_some_and(|p| !p.is_empty() && !p.starts_with("https://") && !p.starts_with("http://")) {
        return Err(ApiError::new("BADPARAM", "photo must be an http(s) URL"));
    }
    for (field, text) in [("name", &change.name), ("status", &change.status), ("photo", &change.photo)] {
        refuse_control_characters(field, text.as_deref().unwrap_or_default())?;
    }
    let user_id = caller.user_id;
    let updated = db.call(move |conn| update_profile(conn, user_id, &change, storage::now())).await?;
    Ok(profile_reply(updated))
}

/// A profile goes under `profile`: its `ts` would clash with the reply's.
fn profile_reply(profile: Profile) -> Map<String, Value> {
    let mut fields = profile.public_fields();
    fields.insert("uid".into(), profile.uid.into());
    let mut reply = Map::new();
    reply.insert("profile".into(), Value::Object(fields));
    reply
}
