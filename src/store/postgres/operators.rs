//! What the operator API reads and changes (see `store::operators`).

use crate::store::error::StorageError;
use crate::store::records::{OperatorSession, UserKey, UserRecord, SESSION_ID_CHARS};

use super::{execute, query, query_opt, rows, PgStore, Retry};

impl PgStore {
    /// The user an operator names (see `store::operators`).
    pub async fn find_user(&self, key: UserKey) -> Result<Option<UserRecord>, StorageError> {
        let key = &key;
        self.retrying(Retry::Always, |client| async move {
            let select = "SELECT id, address, uid, name, created_at, last_login FROM users";
            let found = match key {
                UserKey::Address(address) => {
                    let linked = "address = $1 OR id = (SELECT user_id FROM linked_addresses WHERE address = $1)";
                    query_opt(&client, &format!("{select} WHERE {linked} ORDER BY id LIMIT 1"), &[address]).await?
                }
                UserKey::Uid(uid) => query_opt(&client, &format!("{select} WHERE uid = $1 ORDER BY id LIMIT 1"), &[uid]).await?,
                UserKey::Id(id) => query_opt(&client, &format!("{select} WHERE id = $1"), &[id]).await?,
            };
            let user = found.map(|r| {
                Ok::<_, tokio_postgres::Error>(UserRecord {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    uid: r.try_get(2)?,
                    name: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    last_login: r.try_get(5)?,
                })
            });
            Ok(user.transpose()?)
        })
        .await
    }

    /// A user's live sessions for an operator, most recently used first.
    pub async fn user_sessions(&self, user_id: i64, now: i64) -> Result<Vec<OperatorSession>, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let found = query(
                &client,
                "SELECT substr(token_sha256, 1, $3), appid, device, created_at, last_seen_ms, expires_at, notify_token IS NOT NULL
                 FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY last_seen_ms DESC",
                &[&user_id, &now, &(SESSION_ID_CHARS as i32)],
            )
            .await?;
            let entries = found.iter().map(|r| {
                Ok(OperatorSession {
                    session: r.try_get(0)?,
                    appid: r.try_get(1)?,
                    device: r.try_get(2)?,
                    created: r.try_get(3)?,
                    last_seen: r.try_get::<_, i64>(4)? / 1000,
                    expires: r.try_get(5)?,
                    push: r.try_get(6)?,
                })
            });
            Ok(entries.collect::<Result<_, tokio_postgres::Error>>()?)
        })
        .await
    }

    /// Ends one session of the user (named by its id) or all of them; returns how many.
    pub async fn revoke_sessions(&self, user_id: i64, session: Option<String>) -> Result<usize, StorageError> {
        let session = session.as_deref();
        self.retrying(Retry::Always, |client| async move {
            let ended = match session {
                Some(session) => {
                    execute(
                        &client,
                        "DELETE FROM sessions WHERE user_id = $1 AND substr(token_sha256, 1, $3) = $2",
                        &[&user_id, &session, &(SESSION_ID_CHARS as i32)],
                    )
                    .await?
                }
                None => execute(&client, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?,
            };
            Ok(rows(ended))
        })
        .await
    }
}
