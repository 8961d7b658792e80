//! What the operator API reads and changes: users found by address, upstream uid or
//! id, their sessions, and revoking them.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::error::StorageError;
use crate::store::records::{OperatorSession, UserKey, UserRecord, SESSION_ID_CHARS};

use super::SqliteStore;

const USER_COLUMNS: &str = "id, address, uid, name, created_at, last_login";

fn user_from_row(row: &Row) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        address: row.get(1)?,
        uid: row.get(2)?,
        name: row.get(3)?,
        created_at: row.get(4)?,
        last_login: row.get(5)?,
    })
}

fn find_user(conn: &Connection, key: &UserKey) -> rusqlite::Result<Option<UserRecord>> {
    // Several users may share an upstream uid only if the platform reused one; the oldest answers.
    let (condition, value): (&str, &dyn rusqlite::ToSql) = match key {
        UserKey::Address(address) => ("address = ?1 OR id = (SELECT user_id FROM linked_addresses WHERE address = ?1)", address),
        UserKey::Uid(uid) => ("uid = ?1", uid),
        UserKey::Id(id) => ("id = ?1", id),
    };
    conn.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE {condition} ORDER BY id LIMIT 1"), [value], user_from_row).optional()
}

/// A user's live sessions, most recently used first, each named by its session id.
fn sessions(conn: &Connection, user_id: i64, now: i64) -> rusqlite::Result<Vec<OperatorSession>> {
    let mut query = conn.prepare_cached(
        "SELECT substr(token_sha256, 1, ?3), appid, device, created_at, last_seen_ms, expires_at, notify_token IS NOT NULL
         FROM sessions WHERE user_id = ?1 AND expires_at > ?2 ORDER BY last_seen_ms DESC",
    )?;
    let rows = query.query_map(params![user_id, now, SESSION_ID_CHARS as i64], |r| {
        Ok(OperatorSession {
            session: r.get(0)?,
            appid: r.get(1)?,
            device: r.get(2)?,
            created: r.get(3)?,
            last_seen: r.get::<_, i64>(4)? / 1000,
            expires: r.get(5)?,
            push: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Ends one session of the user (`session` is its id) or all of them; returns how many.
fn revoke(conn: &Connection, user_id: i64, session: Option<&str>) -> rusqlite::Result<usize> {
    match session {
        Some(session) => conn
            .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND substr(token_sha256, 1, ?3) = ?2")?
            .execute(params![user_id, session, SESSION_ID_CHARS as i64]),
        None => conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?.execute([user_id]),
    }
}

impl SqliteStore {
    /// The user an operator names, if there is one.
    pub async fn find_user(&self, key: UserKey) -> Result<Option<UserRecord>, StorageError> {
        self.call(move |conn| find_user(conn, &key)).await
    }

    /// A user's live sessions for an operator (see [`sessions`]).
    pub async fn user_sessions(&self, user_id: i64, now: i64) -> Result<Vec<OperatorSession>, StorageError> {
        self.call(move |conn| sessions(conn, user_id, now)).await
    }

    /// Ends one session of the user (named by its id) or all of them; returns how many.
    pub async fn revoke_sessions(&self, user_id: i64, session: Option<String>) -> Result<usize, StorageError> {
        self.call(move |conn| revoke(conn, user_id, session.as_deref())).await
    }
}
