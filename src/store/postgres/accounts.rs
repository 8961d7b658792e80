//! Deleting an account, in one transaction (see `store::accounts`).

use crate::store::error::StorageError;
use crate::store::records::DeletedAccount;
use crate::store::records::USERDEL;

use super::outbox::queue_userdel;
use super::{execute, query, query_opt, PgStore, Retry};

impl PgStore {
    /// Deletes an account (see `store::accounts`); `None` when there is no such user.
    pub async fn delete_account(&self, user_id: i64, now: i64) -> Result<Option<DeletedAccount>, StorageError> {
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            let Some(user) = query_opt(&tx, "SELECT address, uid, photo FROM users WHERE id = $1 FOR UPDATE", &[&user_id]).await? else {
                return Ok(None);
            };
            let (address, uid, photo): (String, String, String) = (user.try_get(0)?, user.try_get(1)?, user.try_get(2)?);
            let linked = query(&tx, "DELETE FROM linked_addresses WHERE user_id = $1 RETURNING address, uid", &[&user_id]).await?;
            let linked = linked
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()?;
            execute(&tx, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?;
            execute(&tx, "DELETE FROM contacts WHERE owner_id = $1", &[&user_id]).await?;
            execute(&tx, "DELETE FROM users WHERE id = $1", &[&user_id]).await?;
            execute(&tx, "DELETE FROM group_members WHERE phone = $1", &[&address]).await?;
            for (each, uid) in std::iter::once((address.clone(), uid)).chain(linked) {
                execute(&tx, "DELETE FROM otp_challenges WHERE address = $1", &[&each]).await?;
                execute(&tx, "DELETE FROM courier WHERE address = $1", &[&each]).await?;
                // A userdel still queued for an earlier account of the same address stays.
                execute(&tx, "DELETE FROM outbox WHERE recipient = $1 AND kind <> $2", &[&each, &USERDEL]).await?;
                // The platform made a user of each address a login came through: each goes there.
                if !uid.is_empty() {
                    queue_userdel(&tx, &each, &uid, now).await?;
                }
            }
            tx.commit().await?;
            Ok(Some(DeletedAccount { address, photo }))
        })
        .await
    }
}
