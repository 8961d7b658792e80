//! Sessions: one row per logged-in device (see `store::sessions`).

use crate::domain::account::{Caller, PushRegistration};
use crate::store::error::StorageError;
use crate::store::records::DeviceSession;

use super::{execute, query, query_opt, rows, PgStore, Retry};

impl PgStore {
    /// The live session of a token, marked used; `None` for an unknown or expired token.
    pub async fn authenticate(&self, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        let token = token_sha256.as_str();
        let user_id = self
            .retrying(Retry::Always, |client| async move {
                let row = query_opt(
                    &client,
                    "UPDATE sessions SET last_seen_ms = $2 WHERE token_sha256 = $1 AND expires_at > $3 RETURNING user_id",
                    &[&token, &now_ms, &(now_ms / 1000)],
                )
                .await?;
                Ok(row.map(|row| row.try_get(0)).transpose()?)
            })
            .await?;
        Ok(user_id.map(|user_id| Caller { user_id, token_sha256 }))
    }

    /// Ends the token's session, or with `all` every session of its user; returns how many.
    pub async fn end_sessions(&self, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        let token = token_sha256.as_str();
        let sql = match all {
            true => "DELETE FROM sessions WHERE user_id = (SELECT user_id FROM sessions WHERE token_sha256 = $1)",
            false => "DELETE FROM sessions WHERE token_sha256 = $1",
        };
        self.retrying(Retry::Always, |client| async move { Ok(rows(execute(&client, sql, &[&token]).await?)) }).await
    }

    /// The caller's live sessions, most recently used first, as reply entries (no tokens).
    pub async fn sessions_of(&self, caller: Caller, now: i64) -> Result<Vec<DeviceSession>, StorageError> {
        let caller = &caller;
        self.retrying(Retry::Always, |client| async move {
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
        })
        .await
    }

    /// Replaces the push registration of a session (`None` removes it).
    pub async fn set_push(&self, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        let (token, push) = (token_sha256.as_str(), push.as_ref());
        self.retrying(Retry::Always, |client| async move {
            execute(
                &client,
                "UPDATE sessions SET notify_token = $2, notify_sender = $3, device_type = $4 WHERE token_sha256 = $1",
                &[&token, &push.map(|p| &p.token), &push.and_then(|p| p.sender.as_ref()), &push.and_then(|p| p.device_type.as_ref())],
            )
            .await?;
            Ok(())
        })
        .await
    }
}
