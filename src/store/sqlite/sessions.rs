//! The sessions table: one row per logged-in device, found by the SHA-256 of its
//! access token (the token itself is never stored), at most `MAX_DEVICES` per user.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::account::{Caller, Evicted, PushRegistration};

use crate::store::error::StorageError;
use crate::store::records::DeviceSession;

use super::SqliteStore;

/// Finds the live session of a token and marks it used; `None` for an unknown or expired token.
pub(in crate::store) fn authenticate(conn: &mut Connection, token_sha256: &str, now_ms: i64) -> rusqlite::Result<Option<Caller>> {
    let user_id: Option<i64> = conn
        .query_row(
            "UPDATE sessions SET last_seen_ms = ?2 WHERE token_sha256 = ?1 AND expires_at > ?3 RETURNING user_id",
            params![token_sha256, now_ms, now_ms / 1000],
            |r| r.get(0),
        )
        .optional()?;
    Ok(user_id.map(|user_id| Caller { user_id, token_sha256: token_sha256.to_string() }))
}

pub struct NewSession<'a> {
    pub user_id: i64,
    pub token_sha256: &'a str,
    pub appid: &'a str,
    /// Installation id; empty when the app sent none.
    pub device: &'a str,
    pub now_ms: i64,
    pub expires_at: i64,
    /// The linked address the login came through; empty for the user's own address.
    pub via: &'a str,
}

/// Stores a session (replacing the same installation's previous one) and evicts the
/// least recently used sessions beyond `max_devices`. Call inside the login transaction.
pub(in crate::store) fn insert(conn: &Connection, session: &NewSession, max_devices: usize) -> rusqlite::Result<Vec<Evicted>> {
    let s = session;
    // Expired sessions count against no limit.
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND expires_at <= ?2")?.execute(params![s.user_id, s.now_ms / 1000])?;
    if !s.device.is_empty() {
        conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND appid = ?2 AND device = ?3")?
            .execute(params![s.user_id, s.appid, s.device])?;
    }
    insert_row(conn, s)?;
    // Counting first spares the eviction query's sort on the common path: room to spare.
    let sessions: usize = conn.prepare_cached("SELECT count(*) FROM sessions WHERE user_id = ?1")?.query_row([s.user_id], |r| r.get(0))?;
    if sessions <= max_devices {
        return Ok(Vec::new());
    }
    let mut evict = conn.prepare_cached(
        "DELETE FROM sessions WHERE token_sha256 IN (
             SELECT token_sha256 FROM sessions WHERE user_id = ?1
             ORDER BY token_sha256 = ?2 DESC, last_seen_ms DESC LIMIT -1 OFFSET ?3)
         RETURNING appid, device",
    )?;
    let evicted =
        evict.query_map(params![s.user_id, s.token_sha256, max_devices as i64], |r| Ok(Evicted { appid: r.get(0)?, device: r.get(1)? }))?;
    evicted.collect()
}

/// Stores the session row alone, for a user who has no other session.
pub(in crate::store) fn insert_row(conn: &Connection, s: &NewSession) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO sessions (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at, via)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![s.token_sha256, s.user_id, s.appid, s.device, s.now_ms / 1000, s.now_ms, s.expires_at, s.via])?;
    Ok(())
}

/// Ends one session; true if it existed.
pub(in crate::store) fn remove(conn: &mut Connection, token_sha256: &str) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM sessions WHERE token_sha256 = ?1")?.execute([token_sha256])? > 0)
}

/// Ends every session of the token's user; returns how many (0 for an unknown token).
pub(in crate::store) fn remove_all_of_user(conn: &mut Connection, token_sha256: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = (SELECT user_id FROM sessions WHERE token_sha256 = ?1)")?
        .execute([token_sha256])
}

/// Deletes every expired session; returns how many.
pub(in crate::store) fn purge_expired(conn: &mut Connection, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?.execute([now])
}

/// The caller's live sessions, most recently used first, as reply entries (no tokens).
pub(in crate::store) fn list(conn: &mut Connection, caller: &Caller, now: i64) -> rusqlite::Result<Vec<DeviceSession>> {
    let mut query = conn.prepare_cached(
        "SELECT device, appid, created_at, last_seen_ms, token_sha256 = ?2, notify_token IS NOT NULL, device_type FROM sessions
         WHERE user_id = ?1 AND expires_at > ?3 ORDER BY last_seen_ms DESC",
    )?;
    let rows = query.query_map(params![caller.user_id, caller.token_sha256, now], |r| {
        Ok(DeviceSession {
            device: r.get(0)?,
            appid: r.get(1)?,
            created: r.get(2)?,
            last_seen: r.get::<_, i64>(3)? / 1000,
            current: r.get(4)?,
            push: r.get(5)?,
            dt: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
        })
    })?;
    rows.collect()
}

/// Replaces the push registration of a session (`None` removes it).
pub(in crate::store) fn set_push(conn: &mut Connection, token_sha256: &str, push: Option<&PushRegistration>) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sessions SET notify_token = ?2, notify_sender = ?3, device_type = ?4 WHERE token_sha256 = ?1")?.execute(
        params![token_sha256, push.map(|p| &p.token), push.and_then(|p| p.sender.as_ref()), push.and_then(|p| p.device_type.as_ref())],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Replaces the push registration of the token's session (`None` removes it).
    pub async fn set_push(&self, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        self.call(move |conn| set_push(conn, &token_sha256, push.as_ref())).await
    }

    /// The live session of a token, marked used; `None` for an unknown or expired token.
    pub async fn authenticate(&self, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        self.call(move |conn| authenticate(conn, &token_sha256, now_ms)).await
    }

    /// Ends the token's session, or with `all` every session of its user; returns how many.
    pub async fn end_sessions(&self, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        self.call(move |conn| match all {
            true => remove_all_of_user(conn, &token_sha256),
            false => remove(conn, &token_sha256).map(usize::from),
        })
        .await
    }

    /// The caller's live sessions (see [`list`]).
    pub async fn sessions_of(&self, caller: Caller, now: i64) -> Result<Vec<DeviceSession>, StorageError> {
        self.read(move |conn| list(conn, &caller, now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of user 1 created at `now_secs`, living ten seconds.
    fn session<'a>(token: &'a str, device: &'a str, now_secs: i64) -> NewSession<'a> {
        NewSession { user_id: 1, token_sha256: token, appid: "app", device, now_ms: now_secs * 1000, expires_at: now_secs + 10, via: "" }
    }

    fn tokens(conn: &Connection) -> Vec<String> {
        let mut query = conn.prepare("SELECT token_sha256 FROM sessions ORDER BY token_sha256").unwrap();
        let rows = query.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn expired_sessions_do_not_count_against_the_limit_and_are_purged() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::apply(&mut conn, &crate::domain::keys::ServerKeys::from_secret(b"sessions tests").phones).unwrap();
        conn.execute("INSERT INTO users (address, uid, created_at, last_login, ts) VALUES ('18005550001', '1', 0, 0, 0)", []).unwrap();
        insert(&conn, &session("a", "dev-a", 1000), 1).unwrap();
        // At 1020 "a" has expired: a login with a limit of one evicts nothing live.
        assert_eq!(insert(&conn, &session("b", "dev-b", 1020), 1).unwrap(), vec![]);
        assert_eq!(tokens(&conn), ["b"]);

        insert(&conn, &session("c", "dev-c", 1025), 2).unwrap();
        assert_eq!(purge_expired(&mut conn, 1031).unwrap(), 1, "b expired at 1030");
        assert_eq!(tokens(&conn), ["c"]);
    }
}
