//! The users table: who logged in, and the profile their contacts see.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::domain::account::{ChangedProfile, OwnProfile, Profile, ProfileChange};

use crate::domain::notices::NoticeBody;
use crate::store::error::StorageError;

use super::{atomically, outbox, SqliteStore};

/// Columns for [`profile_from_row`], for a query over `users u`.
pub const PROFILE_COLUMNS: &str = "u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail";

/// A [`Profile`] from a row of [`PROFILE_COLUMNS`].
pub fn profile_from_row(row: &Row) -> rusqlite::Result<Profile> {
    Ok(Profile {
        address: row.get(0)?,
        uid: row.get(1)?,
        name: row.get(2)?,
        status: row.get(3)?,
        photo: row.get(4)?,
        ts: row.get(5)?,
        thumbnail: row.get(6)?,
    })
}

/// Creates the user or records a new login; a non-empty `name` replaces the stored one.
/// `address_hash` is the address's phone hash. Returns the local id, whether this was
/// the user's first login, and the profile.
pub(in crate::store) fn upsert_at_login(
    conn: &Connection,
    address: &str,
    address_hash: i64,
    uid: &str,
    name: &str,
    now: i64,
) -> rusqlite::Result<(i64, bool, OwnProfile)> {
    let existing: Option<i64> =
        conn.prepare_cached("SELECT id FROM users WHERE address = ?1")?.query_row([address], |r| r.get(0)).optional()?;
    match existing {
        Some(id) => Ok((id, false, update_at_login(conn, id, Some(uid), name, now)?)),
        None => {
            conn.prepare_cached(
                "INSERT INTO users (address, address_hash, uid, name, created_at, last_login, ts) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
            )?
            .execute(params![address, address_hash, uid, name, now])?;
            Ok((conn.last_insert_rowid(), true, OwnProfile { name: name.to_string(), ..OwnProfile::default() }))
        }
    }
}

/// Records a login of user `id`: its time, the upstream id when it is the user's own
/// address's (`None` for a linked address), and a new non-empty name.
pub(in crate::store) fn update_at_login(
    conn: &Connection,
    id: i64,
    uid: Option<&str>,
    name: &str,
    now: i64,
) -> rusqlite::Result<OwnProfile> {
    // A changed name is a profile change: bump ts so contacts' next sync sees it.
    conn.prepare_cached(
        "UPDATE users SET uid = coalesce(?2, uid), last_login = ?4,
             ts = CASE WHEN ?3 <> '' AND ?3 <> name THEN ?4 ELSE ts END,
             name = CASE WHEN ?3 = '' THEN name ELSE ?3 END
         WHERE id = ?1
         RETURNING name, status, photo, thumbnail",
    )?
    .query_row(params![id, uid, name, now], |r| {
        Ok(OwnProfile { name: r.get(0)?, status: r.get(1)?, photo: r.get(2)?, thumbnail: r.get(3)? })
    })
}

pub(in crate::store) fn profile(conn: &Connection, user_id: i64) -> rusqlite::Result<Profile> {
    conn.query_row(&format!("SELECT {PROFILE_COLUMNS} FROM users u WHERE u.id = ?1"), [user_id], profile_from_row)
}

/// Applies the change and bumps `ts`, and tells the users who have this one as a
/// contact, in one transaction; returns the new profile and the photo it replaced.
pub(in crate::store) fn update_profile(
    conn: &mut Connection,
    user_id: i64,
    change: &ProfileChange,
    now: i64,
) -> rusqlite::Result<ChangedProfile> {
    atomically(conn, |tx| {
        let replaced_photo: String = tx.query_row("SELECT photo FROM users WHERE id = ?1", [user_id], |r| r.get(0))?;
        tx.prepare_cached(
            "UPDATE users SET name = coalesce(?2, name), status = coalesce(?3, status), photo = coalesce(?4, photo),
                 thumbnail = CASE WHEN ?4 IS NULL THEN thumbnail ELSE ?6 END, ts = ?5
             WHERE id = ?1",
        )?
        .execute(params![user_id, change.name, change.status, change.photo, now, change.thumbnail])?;
        let profile = profile(tx, user_id)?;
        // Contacts refresh the profile; no notification is shown (no subject).
        outbox::enqueue_for_contact_holders(tx, user_id, || NoticeBody::of_user(&profile, "").payload(), now)?;
        Ok(ChangedProfile { profile, replaced_photo })
    })
}

impl SqliteStore {
    /// The profile of a user.
    pub async fn profile_of(&self, user_id: i64) -> Result<Profile, StorageError> {
        self.read(move |conn| profile(conn, user_id)).await
    }

    /// Applies a profile change and bumps `ts` (see [`update_profile`]).
    pub async fn change_profile(&self, user_id: i64, change: ProfileChange, now: i64) -> Result<ChangedProfile, StorageError> {
        self.call(move |conn| update_profile(conn, user_id, &change, now)).await
    }
}
