//! Linked addresses: further addresses a user proved while signed in. A login through
//! one of them is the same user (see `login::complete_login`), and its sessions end
//! when the address is unlinked.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::error::StorageError;
use crate::store::records::{LinkOutcome, LinkedAddress};

use super::login::remove_challenge;
use super::outbox::queue_userdel;
use super::{atomically, SqliteStore};

/// Links `address` to user `user_id`, and uses up the code that proved it, if one did.
fn link(conn: &mut Connection, user_id: i64, address: &str, claimed_code: Option<&[u8; 32]>, now: i64) -> rusqlite::Result<LinkOutcome> {
    atomically(conn, |tx| {
        let owner: Option<i64> = tx.query_row("SELECT id FROM users WHERE address = ?1", [address], |r| r.get(0)).optional()?;
        let linked: Option<i64> =
            tx.query_row("SELECT user_id FROM linked_addresses WHERE address = ?1", [address], |r| r.get(0)).optional()?;
        let outcome = match (owner, linked) {
            (Some(owner), _) if owner == user_id => LinkOutcome::OwnAddress,
            (Some(_), _) => LinkOutcome::Taken,
            (None, Some(holder)) if holder == user_id => LinkOutcome::AlreadyLinked,
            (None, Some(_)) => LinkOutcome::Taken,
            (None, None) => {
                tx.execute(
                    "INSERT INTO linked_addresses (address, user_id, linked_at) VALUES (?1, ?2, ?3)",
                    params![address, user_id, now],
                )?;
                LinkOutcome::Linked
            }
        };
        if matches!(outcome, LinkOutcome::Linked | LinkOutcome::AlreadyLinked) {
            if let Some(otp_hash) = claimed_code {
                remove_challenge(tx, address, otp_hash)?;
            }
        }
        Ok(outcome)
    })
}

/// Unlinks `address` from user `user_id`: ends the sessions that logged in through it and
/// queues the platform's `userdel` of the user a login through it made there. `None`
/// when it is not linked to this user; else how many sessions ended.
fn unlink(conn: &mut Connection, user_id: i64, address: &str, now: i64) -> rusqlite::Result<Option<usize>> {
    atomically(conn, |tx| {
        let uid: Option<String> = tx
            .query_row("DELETE FROM linked_addresses WHERE address = ?1 AND user_id = ?2 RETURNING uid", params![address, user_id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(uid) = uid else { return Ok(None) };
        let ended = tx.execute("DELETE FROM sessions WHERE user_id = ?1 AND via = ?2", params![user_id, address])?;
        if !uid.is_empty() {
            queue_userdel(tx, address, &uid, now)?;
        }
        Ok(Some(ended))
    })
}

pub(in crate::store) fn linked_addresses(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<LinkedAddress>> {
    let mut select =
        conn.prepare_cached("SELECT address, linked_at FROM linked_addresses WHERE user_id = ?1 ORDER BY linked_at, address")?;
    let rows = select.query_map([user_id], |r| Ok(LinkedAddress { address: r.get(0)?, linked_at: r.get(1)? }))?;
    rows.collect()
}

/// The user a linked address belongs to, and that user's own address.
pub(in crate::store) fn holder(conn: &Connection, address: &str) -> rusqlite::Result<Option<(i64, String)>> {
    conn.prepare_cached("SELECT u.id, u.address FROM linked_addresses l JOIN users u ON u.id = l.user_id WHERE l.address = ?1")?
        .query_row([address], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

impl SqliteStore {
    /// Links `address` to user `user_id` (see [`link`]).
    pub async fn link_address(
        &self,
        user_id: i64,
        address: &str,
        claimed_code: Option<[u8; 32]>,
        now: i64,
    ) -> Result<LinkOutcome, StorageError> {
        let address = address.to_owned();
        self.call(move |conn| link(conn, user_id, &address, claimed_code.as_ref(), now)).await
    }

    /// Unlinks `address` from user `user_id` (see [`unlink`]).
    pub async fn unlink_address(&self, user_id: i64, address: &str, now: i64) -> Result<Option<usize>, StorageError> {
        let address = address.to_owned();
        self.call(move |conn| unlink(conn, user_id, &address, now)).await
    }

    /// The addresses linked to user `user_id`, oldest first.
    pub async fn linked_addresses(&self, user_id: i64) -> Result<Vec<LinkedAddress>, StorageError> {
        self.read(move |conn| linked_addresses(conn, user_id)).await
    }

    /// The user a linked address belongs to, and that user's own address.
    pub async fn link_holder(&self, address: &str) -> Result<Option<(i64, String)>, StorageError> {
        let address = address.to_owned();
        self.read(move |conn| holder(conn, &address)).await
    }
}
