//! Address books and their sync (see `store::contacts`).

use crate::domain::account::Profile;
use crate::domain::ratelimit::Admission;
use crate::store::error::StorageError;
use crate::store::records::{SyncQuery, PAGE_SIZE};

use super::users::profile_from_row;
use super::{execute, query, query_one, query_opt, rows, PgStore, Retry};

impl PgStore {
    /// Records uploaded phones as contacts and returns one page of matching users (never
    /// the caller), ordered by (ts, address), plus whether more follow (see `contacts::sync`).
    /// `hashes` are the hashes of the uploaded phones. `admit` sees how many uploaded phones
    /// are not yet contacts and how many contacts the upload leaves; a refusal leaves nothing written.
    pub async fn sync_contacts<Refused: Send + 'static>(
        &self,
        q: SyncQuery,
        hashes: Vec<i64>,
        admit: impl FnOnce(usize, usize) -> Admission<Refused> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), Refused>, StorageError> {
        self.guarded(|mut client| async move {
            let tx = client.transaction().await?;
            let count = |n: i64| usize::try_from(n).unwrap_or(0);
            let mut stored = 0;
            if q.phones.is_some() || q.reset {
                // Two syncs of one user count and write one after the other; every change to the
                // user's contacts takes this lock first, so none waits for another in reverse.
                let owner = query_opt(&tx, "SELECT contact_count FROM users WHERE id = $1 FOR UPDATE", &[&q.owner]).await?;
                stored = owner.map(|row| row.try_get::<_, i64>(0)).transpose()?.map_or(0, count);
            }
            if q.reset {
                if q.phones.is_some() {
                    // Known before a reset stays known: uploading the same book again costs nothing.
                    let new = query_one(
                        &tx,
                        "SELECT count(*) FROM unnest($2::bigint[]) AS j(value)
                         WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = $1 AND c.phone_hash = j.value)",
                        &[&q.owner, &hashes],
                    )
                    .await?;
                    // Returning rolls the transaction back: nothing was written.
                    if let Err(refused) = admit(count(new.try_get(0)?), hashes.len()).await {
                        return Ok(Err(refused));
                    }
                }
                execute(
                    &tx,
                    "WITH removed AS (DELETE FROM contacts WHERE owner_id = $1 RETURNING 1)
                     UPDATE users SET contact_count = contact_count - (SELECT count(*) FROM removed) WHERE id = $1",
                    &[&q.owner],
                )
                .await?;
                if q.phones.is_some() {
                    add_contacts(&tx, q.owner, &hashes).await?;
                }
            } else if q.phones.is_some() {
                // The insert finds which phones are new; a refusal rolls it back.
                let after = add_contacts(&tx, q.owner, &hashes).await?;
                if let Err(refused) = admit(after.saturating_sub(stored), after).await {
                    return Ok(Err(refused));
                }
            }
            let (after_ts, after_address) = q.after.as_ref().map_or((i64::MIN, ""), |(ts, address)| (*ts, address.as_str()));
            let limit = i64::try_from(PAGE_SIZE + 1).unwrap_or(i64::MAX);
            let found = match &q.phones {
                Some(phones) => {
                    query(
                        &tx,
                        "SELECT u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail FROM users u
                         WHERE u.address = ANY($1::text[]) AND u.id <> $2 AND (u.ts, u.address) > ($3::bigint, $4::text)
                         ORDER BY u.ts, u.address LIMIT $5",
                        &[phones, &q.owner, &after_ts, &after_address, &limit],
                    )
                    .await?
                }
                None => query(
                    &tx,
                    "SELECT u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail FROM contacts c JOIN users u ON u.address_hash = c.phone_hash
                         WHERE c.owner_id = $1 AND u.id <> $1 AND u.ts >= $2 AND (u.ts, u.address) > ($3::bigint, $4::text)
                         ORDER BY u.ts, u.address LIMIT $5",
                    &[&q.owner, &q.since, &after_ts, &after_address, &limit],
                )
                .await?,
            };
            tx.commit().await?;
            let mut page = found.iter().map(profile_from_row).collect::<Result<Vec<_>, _>>()?;
            let more = page.len() > PAGE_SIZE;
            page.truncate(PAGE_SIZE);
            Ok(Ok((page, more)))
        })
        .await
    }

    /// Removes phones, given by their hashes, from a user's contacts; returns how many were there.
    pub async fn remove_contacts(&self, owner: i64, hashes: Vec<i64>) -> Result<usize, StorageError> {
        let hashes = &hashes;
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            // The lock an upload takes, first: an upload holds it while it inserts.
            execute(&tx, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&owner]).await?;
            let removed =
                rows(execute(&tx, "DELETE FROM contacts WHERE owner_id = $1 AND phone_hash = ANY($2::bigint[])", &[&owner, hashes]).await?);
            if removed > 0 {
                let removed = i64::try_from(removed).unwrap_or(i64::MAX);
                execute(&tx, "UPDATE users SET contact_count = contact_count - $2 WHERE id = $1", &[&owner, &removed]).await?;
            }
            tx.commit().await?;
            Ok(removed)
        })
        .await
    }
}

/// Adds the phones of `hashes` that `owner` does not have yet to their contacts, counting
/// them in `contact_count`; returns how many contacts the owner has now.
async fn add_contacts(tx: &deadpool_postgres::Transaction<'_>, owner: i64, hashes: &[i64]) -> Result<usize, StorageError> {
    let counted = query_opt(
        tx,
        "WITH added AS (
             INSERT INTO contacts (owner_id, phone_hash) SELECT $1::bigint, h FROM unnest($2::bigint[]) AS h ON CONFLICT DO NOTHING
             RETURNING 1)
         UPDATE users SET contact_count = contact_count + (SELECT count(*) FROM added) WHERE id = $1 RETURNING contact_count",
        &[&owner, &hashes],
    )
    .await?;
    let after = counted.map(|row| row.try_get::<_, i64>(0)).transpose()?;
    Ok(after.map_or(0, |n| usize::try_from(n).unwrap_or(0)))
}
