//! Writing a SQLite snapshot into an empty PostgreSQL database (see `store::import`).

use crate::domain::keys::PhoneHasher;
use crate::store::error::StorageError;
use crate::store::records::{Imported, PushRow, SessionRow, Snapshot, UserRow};

use super::{execute, query_opt, PgStore};

/// Rows per statement when importing: a bound on the size of one statement's arrays.
const IMPORT_CHUNK: usize = 10_000;

impl PgStore {
    /// Writes an imported SQLite snapshot in one transaction (see `store::import`); refuses
    /// a database that has users already, so an import never mixes two histories.
    /// `phones` hashes the users' addresses, as the snapshot's address books are hashed.
    pub async fn import(&self, snapshot: Snapshot, phones: &PhoneHasher) -> Result<Imported, StorageError> {
        self.in_statement_mode(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            execute(&tx, "LOCK TABLE users IN EXCLUSIVE MODE", &[]).await?;
            if query_opt(&tx, "SELECT 1 FROM users LIMIT 1", &[]).await?.is_some() {
                return Err(StorageError::ImportRefused("the PostgreSQL database has users already; import into an empty one".into()));
            }
            for chunk in snapshot.users.chunks(IMPORT_CHUNK) {
                let column = |pick: fn(&UserRow) -> String| chunk.iter().map(pick).collect::<Vec<String>>();
                let number = |pick: fn(&UserRow) -> i64| chunk.iter().map(pick).collect::<Vec<i64>>();
                execute(
                    &tx,
                    "INSERT INTO users (id, address, uid, name, status, photo, created_at, last_login, ts, address_hash) OVERRIDING SYSTEM VALUE
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
                         $9::bigint[], $10::bigint[])",
                    &[
                        &number(|u| u.0),
                        &column(|u| u.1.clone()),
                        &column(|u| u.2.clone()),
                        &column(|u| u.3.clone()),
                        &column(|u| u.4.clone()),
                        &column(|u| u.5.clone()),
                        &number(|u| u.6),
                        &number(|u| u.7),
                        &number(|u| u.8),
                        &chunk.iter().map(|u| phones.hash(&u.1)).collect::<Vec<i64>>(),
                    ],
                )
                .await?;
            }
            // New users continue after the imported ids.
            execute(&tx, "SELECT setval(pg_get_serial_sequence('users', 'id'), greatest((SELECT max(id) FROM users), 1))", &[]).await?;
            for chunk in snapshot.sessions.chunks(IMPORT_CHUNK) {
                let text = |pick: fn(&SessionRow) -> String| chunk.iter().map(pick).collect::<Vec<String>>();
                let number = |pick: fn(&SessionRow) -> i64| chunk.iter().map(pick).collect::<Vec<i64>>();
                execute(
                    &tx,
                    "INSERT INTO sessions (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at, via)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[])",
                    &[
                        &text(|s| s.0.clone()),
                        &number(|s| s.1),
                        &text(|s| s.2.clone()),
                        &text(|s| s.3.clone()),
                        &number(|s| s.4),
                        &number(|s| s.5),
                        &number(|s| s.6),
                        &text(|s| s.7.clone()),
                    ],
                )
                .await?;
            }
            for (address, user_id, uid, linked_at) in &snapshot.links {
                execute(
                    &tx,
                    "INSERT INTO linked_addresses (address, user_id, uid, linked_at) VALUES ($1, $2, $3, $4)",
                    &[address, user_id, uid, linked_at],
                )
                .await?;
            }
            execute(&tx, "INSERT INTO attachment_files (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", &[&snapshot.attachments])
                .await?;
            for group in &snapshot.groups {
                execute(
                    &tx,
                    "INSERT INTO chat_groups (gid, name, photo, thumbnail, created_at, ts) VALUES ($1, $2, $3, $4, $5, $5)",
                    &[&group.gid, &group.name, &group.photo, &group.thumbnail, &group.ts],
                )
                .await?;
                let (phones, roles): (Vec<&str>, Vec<i32>) = group.members.iter().map(|(phone, role)| (phone.as_str(), *role as i32)).unzip();
                execute(
                    &tx,
                    "INSERT INTO group_members (gid, phone, role) SELECT $1, * FROM unnest($2::text[], $3::int[])",
                    &[&group.gid, &phones, &roles],
                )
                .await?;
            }
            for chunk in snapshot.thumbnails.chunks(IMPORT_CHUNK) {
                let ids: Vec<i64> = chunk.iter().map(|t| t.0).collect();
                let jpegs: Vec<&[u8]> = chunk.iter().map(|t| t.1.as_slice()).collect();
                execute(
                    &tx,
                    "UPDATE users SET thumbnail = t.jpeg FROM unnest($1::bigint[], $2::bytea[]) AS t(id, jpeg) WHERE users.id = t.id",
                    &[&ids, &jpegs],
                )
                .await?;
            }
            for chunk in snapshot.push.chunks(IMPORT_CHUNK) {
                let text = |pick: fn(&PushRow) -> Option<String>| chunk.iter().map(pick).collect::<Vec<Option<String>>>();
                execute(
                    &tx,
                    "UPDATE sessions SET notify_token = p.token, notify_sender = p.sender, device_type = p.dt
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS p(session, token, sender, dt)
                     WHERE sessions.token_sha256 = p.session",
                    &[&text(|p| Some(p.0.clone())), &text(|p| Some(p.1.clone())), &text(|p| p.2.clone()), &text(|p| p.3.clone())],
                )
                .await?;
            }
            for chunk in snapshot.contacts.chunks(IMPORT_CHUNK) {
                let owners: Vec<i64> = chunk.iter().map(|c| c.0).collect();
                let hashes: Vec<i64> = chunk.iter().map(|c| c.1).collect();
                execute(
                    &tx,
                    "INSERT INTO contacts (owner_id, phone_hash) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                    &[&owners, &hashes],
                )
                .await?;
            }
            execute(
                &tx,
                "UPDATE users SET contact_count = c.n FROM (SELECT owner_id, count(*) AS n FROM contacts GROUP BY owner_id) AS c
                 WHERE users.id = c.owner_id",
                &[],
            )
            .await?;
            tx.commit().await?;
            Ok(Imported { users: snapshot.users.len(), sessions: snapshot.sessions.len(), contacts: snapshot.contacts.len() })
        })
        .await
    }
}
