//! The groups and group_members tables: groups mirrored from the platform, with the
//! notices of each change queued in the change's transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::collections::HashSet;

use crate::domain::groups::{ChangedGroup, Group, GroupWrite, MemberChange, MEMBER, OWNER};
use crate::domain::keys::PhoneHasher;
use crate::store::error::StorageError;
use crate::store::records::member_hashes;

use super::{atomically, outbox, SqliteStore};

pub(in crate::store) fn group(conn: &Connection, gid: i64) -> rusqlite::Result<Option<Group>> {
    let found = conn
        .prepare_cached("SELECT name, photo, thumbnail, ts FROM chat_groups WHERE gid = ?1")?
        .query_row([gid], |r| {
            Ok(Group { gid, name: r.get(0)?, photo: r.get(1)?, thumbnail: r.get(2)?, ts: r.get(3)?, members: Vec::new() })
        })
        .optional()?;
    let Some(mut group) = found else { return Ok(None) };
    let mut members = conn.prepare_cached("SELECT phone, role FROM group_members WHERE gid = ?1 ORDER BY role DESC, phone")?;
    group.members = members.query_map([gid], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(Some(group))
}

fn json_list(phones: &[String]) -> String {
    Value::from(phones.to_vec()).to_string()
}

fn add_members(tx: &Connection, gid: i64, phones: &[String], role: i64) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO group_members (gid, phone, role) VALUES (?1, ?2, ?3)")?;
    for phone in phones {
        insert.execute(params![gid, phone, role])?;
    }
    Ok(())
}

/// Queues the group's notices for its members and `also_tell` who are users, but the
/// actor: each recipient's lists the members they know (see [`Group::notice_for`]).
fn notify(tx: &Connection, group: &Group, write: &GroupWrite, subject: &str, phones: &PhoneHasher) -> rusqlite::Result<usize> {
    let recipients: Vec<String> = tx
        .prepare_cached("SELECT address FROM users WHERE address IN (SELECT value FROM json_each(?1)) ORDER BY address")?
        .query_map([json_list(&write.told(group))], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let members = member_hashes(group, phones);
    let hashes = Value::from(members.keys().copied().collect::<Vec<i64>>()).to_string();
    let mut known = HashSet::new();
    let mut contacts = tx.prepare_cached(
        "SELECT u.address, c.phone_hash FROM users u JOIN contacts c ON c.owner_id = u.id
         WHERE u.address IN (SELECT value FROM json_each(?1)) AND c.phone_hash IN (SELECT value FROM json_each(?2))",
    )?;
    for row in contacts.query_map(params![json_list(&recipients), hashes], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (recipient, hash) = row?;
        known.extend(members.get(&hash).into_iter().flatten().map(|phone| (recipient.clone(), phone.clone())));
    }
    let notices = write.notices(group, subject, &recipients, &known);
    outbox::enqueue_each(tx, &notices, write.now)
}

/// Applies the change and queues its notices, in one transaction; returns the group and
/// the photo it replaced, `None` (changing nothing) when the group to change is gone.
pub(in crate::store) fn write(conn: &mut Connection, write: &GroupWrite, phones: &PhoneHasher) -> rusqlite::Result<Option<ChangedGroup>> {
    atomically(conn, |tx| {
        let shown: Option<String> =
            tx.prepare_cached("SELECT photo FROM chat_groups WHERE gid = ?1")?.query_row([write.gid], |r| r.get(0)).optional()?;
        let replaced_photo = match shown {
            Some(photo) => photo,
            None if write.create => String::new(),
            None => return Ok(None),
        };
        let (photo, thumbnail) = match &write.photo {
            Some((photo, thumbnail)) => (Some(photo), thumbnail.as_ref()),
            None => (None, None),
        };
        if write.create {
            tx.prepare_cached(
                "INSERT INTO chat_groups (gid, name, photo, thumbnail, created_at, ts) VALUES (?1, coalesce(?2, ''), coalesce(?3, ''), ?4, ?5, ?5)",
            )?
            .execute(params![write.gid, write.name, photo, thumbnail, write.now])?;
        } else {
            tx.prepare_cached(
                "UPDATE chat_groups SET name = coalesce(?2, name), photo = coalesce(?3, photo),
                     thumbnail = CASE WHEN ?3 IS NULL THEN thumbnail ELSE ?4 END, ts = ?5
                 WHERE gid = ?1",
            )?
            .execute(params![write.gid, write.name, photo, thumbnail, write.now])?;
        }
        match &write.members {
            MemberChange::Keep => {}
            MemberChange::Create { owner, members } => {
                add_members(tx, write.gid, std::slice::from_ref(owner), OWNER)?;
                add_members(tx, write.gid, members, MEMBER)?;
            }
            MemberChange::Replace { keep, members } => {
                let staying: Vec<String> = members.iter().chain(std::iter::once(keep)).cloned().collect();
                tx.prepare_cached(
                    "DELETE FROM group_members WHERE gid = ?1 AND role < ?2 AND phone NOT IN (SELECT value FROM json_each(?3))",
                )?
                .execute(params![write.gid, OWNER, json_list(&staying)])?;
                add_members(tx, write.gid, members, MEMBER)?;
            }
            MemberChange::Add(phones) => add_members(tx, write.gid, phones, MEMBER)?,
            MemberChange::Remove(phones) => {
                tx.prepare_cached("DELETE FROM group_members WHERE gid = ?1 AND role < ?2 AND phone IN (SELECT value FROM json_each(?3))")?
                    .execute(params![write.gid, OWNER, json_list(phones)])?;
            }
            MemberChange::SetRole { phones, role } => {
                tx.prepare_cached(
                    "UPDATE group_members SET role = ?4 WHERE gid = ?1 AND role < ?2 AND phone IN (SELECT value FROM json_each(?3))",
                )?
                .execute(params![write.gid, OWNER, json_list(phones), role])?;
            }
        }
        let group = group(tx, write.gid)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        if let Some(subject) = &write.subject {
            notify(tx, &group, write, subject, phones)?;
        }
        Ok(Some(ChangedGroup { group, replaced_photo }))
    })
}

/// Tells the members (but `actor`) that the group is gone, then deletes it; returns the
/// group deleted.
pub(in crate::store) fn delete(
    conn: &mut Connection,
    gid: i64,
    actor: &str,
    subject: &str,
    now: i64,
    phones: &PhoneHasher,
) -> rusqlite::Result<Option<Group>> {
    atomically(conn, |tx| {
        let Some(group) = group(tx, gid)? else { return Ok(None) };
        let (gone, write) = group.deletion(actor, now);
        notify(tx, &gone, &write, subject, phones)?;
        tx.prepare_cached("DELETE FROM chat_groups WHERE gid = ?1")?.execute([gid])?;
        Ok(Some(group))
    })
}

/// The groups `phone` belongs to that changed at or after `since`, oldest change first.
pub(in crate::store) fn groups_of(conn: &Connection, phone: &str, since: i64, limit: usize) -> rusqlite::Result<Vec<Group>> {
    let gids: Vec<i64> = conn
        .prepare_cached(
            "SELECT g.gid FROM group_members m JOIN chat_groups g ON g.gid = m.gid
             WHERE m.phone = ?1 AND g.ts >= ?2 ORDER BY g.ts, g.gid LIMIT ?3",
        )?
        .query_map(params![phone, since, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut groups = Vec::with_capacity(gids.len());
    for gid in gids {
        groups.extend(group(conn, gid)?);
    }
    Ok(groups)
}

impl SqliteStore {
    /// A group with its members; `None` when there is no such group.
    pub async fn group(&self, gid: i64) -> Result<Option<Group>, StorageError> {
        self.read(move |conn| group(conn, gid)).await
    }

    /// Applies a group change and queues its notices (see [`write`]).
    pub async fn write_group(&self, change: GroupWrite, phones: &PhoneHasher) -> Result<Option<ChangedGroup>, StorageError> {
        let phones = phones.clone();
        self.call(move |conn| write(conn, &change, &phones)).await
    }

    /// Tells the members but `actor` (with `subject`) that the group is gone, and deletes it
    /// (see [`delete`]).
    pub async fn delete_group(
        &self,
        gid: i64,
        actor: String,
        subject: String,
        now: i64,
        phones: &PhoneHasher,
    ) -> Result<Option<Group>, StorageError> {
        let phones = phones.clone();
        self.call(move |conn| delete(conn, gid, &actor, &subject, now, &phones)).await
    }

    /// The groups of `phone` changed at or after `since` (see [`groups_of`]).
    pub async fn groups_of(&self, phone: String, since: i64, limit: usize) -> Result<Vec<Group>, StorageError> {
        self.read(move |conn| groups_of(conn, &phone, since, limit)).await
    }
}
