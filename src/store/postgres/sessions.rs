//! Sessions: one row per logged-in device (see `store::sessions`).

use deadpool_postgres::Object;

use crate::domain::account::{Caller, PushRegistration};
use crate::store::error::StorageError;
use crate::store::records::DeviceSession;

use super::{execute, query, query_opt, rows, PgStore, Retry};

impl PgStore {
    /// The live session of a token, marked used; `None` for an unknown or expired token.
    pub async fn authenticate(&self, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        self.retrying(Retry::Always, |client| self.authenticate_once(client, token_sha256.clone(), now_ms)).await
    }

    async fn authenticate_once(&self, client: Object, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        let row = query_opt(
            &client,
            "UPDATE sessions SET last_seen_ms = $2 WHERE token_sha256 = $1 AND expires_at > $3 RETURNING user_id",
            &[&token_sha256, &now_ms, &(now_ms / 1000)],
        )
        .await?;
        Ok(match row {
            Some(row) => Some(Caller { user_id: row.try_get(0)?, token_sha256 }),
            None => None,
        })
    }

    /// Ends the token's session, or with `all` every session of its user; returns how many.
    pub async fn end_sessions(&self, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| self.end_sessions_once(client, token_sha256.clone(), all)).await
    }

    async fn end_sessions_once(&self, client: Object, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        let sql = match all {
            true => "DELETE FROM sessions WHERE user_id = (SELECT user_id FROM sessions WHERE token_sha256 = $1)",
            false => "DELETE FROM sessions WHERE token_sha256 = $1",
        };
        Ok(rows(execute(&client, sql, &[&token_sha256]).await?))
    }

    /// The caller's live sessions, most recently used first, as reply entries (no tokens).
    pub async fn sessions_of(&self, caller: Caller, now: i64) -> Result<Vec<DeviceSession>, StorageError> {
        self.retrying(Retry::Always, |client| self.sessions_of_once(client, caller.clone(), now)).await
    }

    async fn sessions_of_once(&self, client: Object, caller: Caller, now: i64) -> Result<Vec<DeviceSession>, StorageError> {
        let found = query(
            &client,
            "SELECT device, appid, created_at, last_seen_ms, token_sha256 = $2, notify_token IS NOT NULL, device_type FROM sessions
             WHERE user_id = $1 AND expires_at > $3 ORDER BY last_seen_ms DESC",
            &[&caller.user_id, &caller.token_sha256, &now],
        )
        .await?;
        let entries = found.iter().map(|r| {
            Ok(DeviceSession {
                device: r.try_get(0)?,
                appid: r.try_get(1)?,
                created: r.try_get(2)?,
                last_seen: r.try_get::<_, i64>(3)? / 1000,
                current: r.try_get(4)?,
                push: r.try_get(5)?,
                dt: r.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
            })
        });
        Ok(entries.collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Replaces the push registration of a session (`None` removes it).
    pub async fn set_push(&self, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| self.set_push_once(client, token_sha256.clone(), push.clone())).await
    }

    async fn set_push_once(&self, client: Object, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        execute(
            &client,
            "UPDATE sessions SET notify_token = $2, notify_sender = $3, device_type = $4 WHERE token_sha256 = $1",
            &[
                &token_sha256,
                &push.as_ref().map(|p| &p.token),
                &push.as_ref().and_then(|p| p.sender.as_ref()),
                &push.as_ref().and_then(|p| p.device_type.as_ref()),
            ],
        )
        .await?;
        Ok(())
    }
}
