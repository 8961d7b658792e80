//! Moving an instance from its SQLite file to PostgreSQL (`otpgate migrate --from-sqlite`):
//! users keep their ids, sessions (token hashes) stay valid, and address books, photos,
//! push registrations and groups stay.
//! Pending codes and queued messages are not carried over: they live minutes, and a user
//! who was waiting for one asks again.

use rusqlite::OpenFlags;

use crate::domain::groups::Group;
use crate::domain::keys::PhoneHasher;
use crate::store::{Db, StorageError};

/// A user: (id, address, uid, name, status, photo, created_at, last_login, ts).
pub type UserRow = (i64, String, String, String, String, String, i64, i64, i64);
/// A session: (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at).
pub type SessionRow = (String, i64, String, String, i64, i64, i64);
/// A session's push registration: (token_sha256, notify_token, notify_sender, device_type).
pub type PushRow = (String, String, Option<String>, Option<String>);

/// The rows that move, read from the SQLite file.
#[derive(Default)]
pub struct Snapshot {
    pub users: Vec<UserRow>,
    pub sessions: Vec<SessionRow>,
    /// (owner_id, phone hash): both databases hash phones under the same key.
    pub contacts: Vec<(i64, i64)>,
    /// (user id, thumbnail JPEG) of users with an uploaded photo.
    pub thumbnails: Vec<(i64, Vec<u8>)>,
    /// (token_sha256, notify_token, notify_sender, device_type) of sessions with a push registration.
    pub push: Vec<PushRow>,
    /// Groups and their members.
    pub groups: Vec<Group>,
}

/// What an import moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub users: usize,
    pub sessions: usize,
    pub contacts: usize,
}

/// Reads users, live sessions and contacts from the SQLite database at `path`, which is
/// first brought to the latest schema (a file of an earlier release is upgraded).
/// `phones` hashes address books, as the service does.
pub fn read_sqlite(path: &str, now: i64, phones: &PhoneHasher) -> Result<Snapshot, StorageError> {
    if !std::path::Path::new(path).exists() {
        return Err(StorageError::Thread(format!("{path} does not exist")));
    }
    Db::open(path, 1, phones)?.close()?;
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut snapshot = Snapshot::default();
    let mut users = conn.prepare("SELECT id, address, uid, name, status, photo, created_at, last_login, ts FROM users ORDER BY id")?;
    snapshot.users = users
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut sessions = conn
        .prepare("SELECT token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at FROM sessions WHERE expires_at > ?1")?;
    snapshot.sessions = sessions
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // Address books cannot be hashed again: their phones are gone. They move only under the key they were hashed with.
    let mut hashes = conn.prepare("SELECT address, address_hash FROM users WHERE address_hash IS NOT NULL")?;
    let other_key = hashes.query_map([], |r| Ok(phones.hash(&r.get::<_, String>(0)?) != r.get::<_, i64>(1)?))?.next().transpose()?;
    if other_key == Some(true) {
        return Err(StorageError::Thread(format!(
            "{path} hashed its address books under another server key; import with the OTP_SECRET or OTP_SECRET_FILE that instance used (without either, it used the key file {})",
            crate::domain::keys::default_key_file(path).display()
        )));
    }
    let mut contacts = conn.prepare("SELECT owner_id, phone_hash FROM contacts")?;
    snapshot.contacts = contacts.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut thumbnails = conn.prepare("SELECT id, thumbnail FROM users WHERE thumbnail IS NOT NULL")?;
    snapshot.thumbnails = thumbnails.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut push = conn.prepare(
        "SELECT token_sha256, notify_token, notify_sender, device_type FROM sessions WHERE expires_at > ?1 AND notify_token IS NOT NULL",
    )?;
    snapshot.push = push.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<_>>()?;
    let gids: Vec<i64> =
        conn.prepare("SELECT gid FROM chat_groups ORDER BY gid")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for gid in gids {
        snapshot.groups.extend(crate::store::groups::group(&conn, gid)?);
    }
    Ok(snapshot)
}

impl Db {
    /// Copies what the SQLite database at `path` holds of users, sessions and contacts
    /// into this PostgreSQL database, in one transaction; refused when it has users already.
    pub async fn import_sqlite(&self, path: &str) -> Result<Imported, StorageError> {
        let Some(pg) = self.postgres() else {
            return Err(StorageError::Thread("importing a SQLite database needs DATABASE_URL (PostgreSQL)".into()));
        };
        let (path, now, phones) = (path.to_string(), self.clock().now(), self.phones.clone());
        let snapshot = tokio::task::spawn_blocking(move || read_sqlite(&path, now, &phones))
            .await
            .map_err(|e| StorageError::Thread(format!("reading the SQLite database failed: {e}")))??;
        pg.import(snapshot, &self.phones).await
    }
}
