//! Deleting an account: the user's rows go in one transaction, and the platform's
//! `userdel` is queued in it, through the outbox, so it is retried until taken.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::error::StorageError;
use crate::store::records::{DeletedAccount, USERDEL};

use super::{atomically, outbox, SqliteStore};

/// Deletes the user and everything kept for them: sessions (and their push tokens),
/// linked addresses, their address book, their group memberships, pending codes,
/// delivery records and notices waiting for them. Others' address books that hold
/// their phone stay.
fn delete(conn: &mut Connection, user_id: i64, now: i64) -> rusqlite::Result<Option<DeletedAccount>> {
    atomically(conn, |tx| {
        let found: Option<(String, String, String)> = tx
            .query_row("SELECT address, uid, photo FROM users WHERE id = ?1", [user_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((address, uid, photo)) = found else { return Ok(None) };
        let linked: Vec<(String, String)> = tx
            .prepare("DELETE FROM linked_addresses WHERE user_id = ?1 RETURNING address, uid")?
            .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
        tx.execute("DELETE FROM contacts WHERE owner_id = ?1", [user_id])?;
        tx.execute("DELETE FROM users WHERE id = ?1", [user_id])?;
        tx.execute("DELETE FROM group_members WHERE phone = ?1", [&address])?;
        for (each, uid) in std::iter::once((address.clone(), uid)).chain(linked) {
            tx.execute("DELETE FROM otp_challenges WHERE address = ?1", [&each])?;
            tx.execute("DELETE FROM courier WHERE address = ?1", [&each])?;
            // A userdel still queued for an earlier account of the same address stays.
            tx.execute("DELETE FROM outbox WHERE recipient = ?1 AND kind <> ?2", params![each, USERDEL])?;
            // The platform made a user of each address a login came through: each goes there.
            if !uid.is_empty() {
                outbox::queue_userdel(tx, &each, &uid, now)?;
            }
        }
        Ok(Some(DeletedAccount { address, photo }))
    })
}

impl SqliteStore {
    /// Deletes an account (see [`delete`]); `None` when there is no such user.
    pub async fn delete_account(&self, user_id: i64, now: i64) -> Result<Option<DeletedAccount>, StorageError> {
        self.call(move |conn| delete(conn, user_id, now)).await
    }
}
