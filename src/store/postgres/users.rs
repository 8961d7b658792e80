//! Users and their profiles (see `store::users`).

use tokio_postgres::Row;

use crate::domain::account::{ChangedProfile, Profile, ProfileChange};
use crate::domain::notices::NoticeBody;
use crate::store::error::StorageError;

use super::files::lock_file;
use super::{execute, query_one, PgStore, Retry};

impl PgStore {
    /// The profile of a user.
    pub async fn profile_of(&self, user_id: i64) -> Result<Profile, StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let row = query_one(
                &client,
                "SELECT u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail FROM users u WHERE u.id = $1",
                &[&user_id],
            )
            .await?;
            Ok(profile_from_row(&row)?)
        })
        .await
    }

    /// Applies a profile change and bumps `ts`; returns the new profile and the photo it
    /// replaced.
    pub async fn change_profile(&self, user_id: i64, change: ProfileChange, now: i64) -> Result<ChangedProfile, StorageError> {
        let change = &change;
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let tx = client.transaction().await?;
            if let Some(photo) = change.photo.as_deref() {
                lock_file(&tx, photo).await?;
            }
            // Locked until the commit: a change at the same moment waits, then reads this one's photo.
            let replaced_photo: String =
                query_one(&tx, "SELECT photo FROM users WHERE id = $1 FOR UPDATE", &[&user_id]).await?.try_get(0)?;
            let row = query_one(
                &tx,
                "UPDATE users u SET name = coalesce($2, u.name), status = coalesce($3, u.status), photo = coalesce($4, u.photo),
                     thumbnail = CASE WHEN $4::TEXT IS NULL THEN u.thumbnail ELSE $6 END, ts = $5
                 WHERE u.id = $1 RETURNING u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail",
                &[&user_id, &change.name, &change.status, &change.photo, &now, &change.thumbnail],
            )
            .await?;
            let profile = profile_from_row(&row)?;
            // Contacts refresh the profile; no notification is shown (no subject).
            let payload = NoticeBody::of_user(&profile, "").payload();
            execute(
                &tx,
                "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
                 SELECT u.address, $2::text, $3::bigint, $3::bigint FROM contacts c JOIN users u ON u.id = c.owner_id
                 WHERE c.phone_hash = (SELECT address_hash FROM users WHERE id = $1) AND u.id <> $1 ORDER BY u.id",
                &[&user_id, &payload, &now],
            )
            .await?;
            tx.commit().await?;
            Ok(ChangedProfile { profile, replaced_photo })
        })
        .await
    }
}

/// A [`Profile`] from a row of `u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail`.
pub(super) fn profile_from_row(row: &Row) -> Result<Profile, tokio_postgres::Error> {
    Ok(Profile {
        address: row.try_get(0)?,
        uid: row.try_get(1)?,
        name: row.try_get(2)?,
        status: row.try_get(3)?,
        photo: row.try_get(4)?,
        ts: row.try_get(5)?,
        thumbnail: row.try_get(6)?,
    })
}
