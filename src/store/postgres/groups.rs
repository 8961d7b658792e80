//! Groups and their members (see `store::groups`).

use crate::domain::groups::{ChangedGroup, Group, GroupWrite, MemberChange, MEMBER, OWNER};
use crate::domain::keys::PhoneHasher;
use crate::store::error::StorageError;
use crate::store::records::member_hashes;

use super::files::lock_file;
use super::{execute, query, query_opt, PgStore, Retry, Session};

/// The group `gid` with its members, on any client (a transaction included).
async fn group_on(client: &impl Session, gid: i64) -> Result<Option<Group>, StorageError> {
    let Some(row) = query_opt(client, "SELECT name, photo, thumbnail, ts FROM chat_groups WHERE gid = $1", &[&gid]).await? else {
        return Ok(None);
    };
    let mut group =
        Group { gid, name: row.try_get(0)?, photo: row.try_get(1)?, thumbnail: row.try_get(2)?, ts: row.try_get(3)?, members: Vec::new() };
    let members = query(client, "SELECT phone, role FROM group_members WHERE gid = $1 ORDER BY role DESC, phone", &[&gid]).await?;
    group.members =
        members.iter().map(|r| Ok((r.try_get(0)?, i64::from(r.try_get::<_, i32>(1)?)))).collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(Some(group))
}

async fn add_group_members(tx: &impl Session, gid: i64, phones: &[String], role: i64) -> Result<(), StorageError> {
    let role = role as i32;
    execute(
        tx,
        "INSERT INTO group_members (gid, phone, role) SELECT $1, phone, $3 FROM unnest($2::text[]) AS phone ON CONFLICT DO NOTHING",
        &[&gid, &phones, &role],
    )
    .await?;
    Ok(())
}

/// Queues the group's notices for its members and `also_tell` who are users, but the
/// actor: each recipient's lists the members they know (see `Group::notice_for`).
async fn notify_group(
    tx: &impl Session,
    group: &Group,
    write: &GroupWrite,
    subject: &str,
    phones: &PhoneHasher,
) -> Result<(), StorageError> {
    let told = write.told(group);
    let rows = query(tx, "SELECT address FROM users WHERE address = ANY($1::text[]) ORDER BY address", &[&told]).await?;
    let recipients = rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?;
    let members = member_hashes(group, phones);
    let hashes: Vec<i64> = members.keys().copied().collect();
    let rows = query(
        tx,
        "SELECT u.address, c.phone_hash FROM users u JOIN contacts c ON c.owner_id = u.id
         WHERE u.address = ANY($1::text[]) AND c.phone_hash = ANY($2::bigint[])",
        &[&recipients, &hashes],
    )
    .await?;
    let mut known = std::collections::HashSet::new();
    for row in &rows {
        let (recipient, hash): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        known.extend(members.get(&hash).into_iter().flatten().map(|phone| (recipient.clone(), phone.clone())));
    }
    let (to, payloads): (Vec<String>, Vec<String>) = write.notices(group, subject, &recipients, &known).into_iter().unzip();
    execute(
        tx,
        "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
         SELECT recipient, payload, $3, $3 FROM unnest($1::text[], $2::text[]) AS n(recipient, payload)",
        &[&to, &payloads, &write.now],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// A group with its members.
    pub async fn group(&self, gid: i64) -> Result<Option<Group>, StorageError> {
        self.retrying(Retry::Always, |client| async move { group_on(&client, gid).await }).await
    }

    /// Applies a group change and queues its notices, in one transaction; returns the group
    /// and the photo it replaced, `None` (changing nothing) when the group to change is gone.
    pub async fn write_group(&self, change: GroupWrite, phones: &PhoneHasher) -> Result<Option<ChangedGroup>, StorageError> {
        let change = &change;
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            let (photo, thumbnail) = match &change.photo {
                Some((photo, thumbnail)) => (Some(photo), thumbnail.as_ref()),
                None => (None, None),
            };
            if let Some(photo) = photo {
                lock_file(&tx, photo).await?;
            }
            // Locked until the commit: a change at the same moment waits, then reads this one's photo.
            let replaced_photo: String =
                match query_opt(&tx, "SELECT photo FROM chat_groups WHERE gid = $1 FOR UPDATE", &[&change.gid]).await? {
                    Some(row) => row.try_get(0)?,
                    None if change.create => String::new(),
                    // Returning without a commit rolls the transaction back.
                    None => return Ok(None),
                };
            if change.create {
                execute(
                    &tx,
                    "INSERT INTO chat_groups (gid, name, photo, thumbnail, created_at, ts) VALUES ($1, coalesce($2, ''), coalesce($3, ''), $4, $5, $5)",
                    &[&change.gid, &change.name, &photo, &thumbnail, &change.now],
                )
                .await?;
            } else {
                execute(
                    &tx,
                    "UPDATE chat_groups SET name = coalesce($2, name), photo = coalesce($3, photo),
                         thumbnail = CASE WHEN $3::TEXT IS NULL THEN thumbnail ELSE $4 END, ts = $5
                     WHERE gid = $1",
                    &[&change.gid, &change.name, &photo, &thumbnail, &change.now],
                )
                .await?;
            }
            let owner = OWNER as i32;
            match &change.members {
                MemberChange::Keep => {}
                MemberChange::Create { owner, members } => {
                    add_group_members(&tx, change.gid, std::slice::from_ref(owner), OWNER).await?;
                    add_group_members(&tx, change.gid, members, MEMBER).await?;
                }
                MemberChange::Replace { keep, members } => {
                    let staying: Vec<String> = members.iter().chain(std::iter::once(keep)).cloned().collect();
                    execute(
                        &tx,
                        "DELETE FROM group_members WHERE gid = $1 AND role < $2 AND NOT (phone = ANY($3::text[]))",
                        &[&change.gid, &owner, &staying],
                    )
                    .await?;
                    add_group_members(&tx, change.gid, members, MEMBER).await?;
                }
                MemberChange::Add(phones) => add_group_members(&tx, change.gid, phones, MEMBER).await?,
                MemberChange::Remove(phones) => {
                    execute(
                        &tx,
                        "DELETE FROM group_members WHERE gid = $1 AND role < $2 AND phone = ANY($3::text[])",
                        &[&change.gid, &owner, phones],
                    )
                    .await?;
                }
                MemberChange::SetRole { phones, role } => {
                    let role = *role as i32;
                    execute(
                        &tx,
                        "UPDATE group_members SET role = $4 WHERE gid = $1 AND role < $2 AND phone = ANY($3::text[])",
                        &[&change.gid, &owner, phones, &role],
                    )
                    .await?;
                }
            }
            let group = group_on(&tx, change.gid).await?.ok_or_else(|| StorageError::Vanished(format!("group {}", change.gid)))?;
            if let Some(subject) = &change.subject {
                notify_group(&tx, &group, change, subject, phones).await?;
            }
            tx.commit().await?;
            Ok(Some(ChangedGroup { group, replaced_photo }))
        })
        .await
    }

    /// Tells the members but `actor` that the group is gone, then deletes it; returns the
    /// group deleted, as read under its row lock.
    pub async fn delete_group(
        &self,
        gid: i64,
        actor: String,
        subject: String,
        now: i64,
        phones: &PhoneHasher,
    ) -> Result<Option<Group>, StorageError> {
        let (actor, subject) = (actor.as_str(), subject.as_str());
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            execute(&tx, "SELECT 1 FROM chat_groups WHERE gid = $1 FOR UPDATE", &[&gid]).await?;
            let Some(group) = group_on(&tx, gid).await? else { return Ok(None) };
            let (gone, write) = group.deletion(actor, now);
            notify_group(&tx, &gone, &write, subject, phones).await?;
            execute(&tx, "DELETE FROM chat_groups WHERE gid = $1", &[&gid]).await?;
            tx.commit().await?;
            Ok(Some(group))
        })
        .await
    }

    /// The groups `phone` belongs to that changed at or after `since`, oldest change first.
    pub async fn groups_of(&self, phone: String, since: i64, limit: usize) -> Result<Vec<Group>, StorageError> {
        let (phone, limit) = (phone.as_str(), limit as i64);
        self.retrying(Retry::Always, |client| async move {
            let gids = query(
                &client,
                "SELECT g.gid FROM group_members m JOIN chat_groups g ON g.gid = m.gid
                 WHERE m.phone = $1 AND g.ts >= $2 ORDER BY g.ts, g.gid LIMIT $3",
                &[&phone, &since, &limit],
            )
            .await?;
            let mut groups = Vec::with_capacity(gids.len());
            for row in gids {
                groups.extend(group_on(&client, row.try_get(0)?).await?);
            }
            Ok(groups)
        })
        .await
    }
}
