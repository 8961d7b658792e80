//! Reading what moves from a SQLite file to PostgreSQL (`otpgate migrate --from-sqlite`):
//! users keep their ids, sessions (token hashes) stay valid, and address books, photos,
//! push registrations, groups and linked addresses stay.
//! Pending codes and queued messages are not carried over: they live minutes, and a user
//! who was waiting for one asks again.

use rusqlite::{OpenFlags, OptionalExtension};

use crate::domain::keys::PhoneHasher;
use crate::store::error::StorageError;
use crate::store::records::Snapshot;

use super::{groups, schema, SqliteStore};

/// Reads users, live sessions and contacts from the SQLite database at `path`.
/// `phones` hashes address books, as the service does. A file of an earlier release is
/// upgraded in a copy beside it, never in place: the upgrade hashes its address books,
/// and under another key than that instance's, the file would lose them.
pub fn read_sqlite(path: &str, now: i64, phones: &PhoneHasher) -> Result<Snapshot, StorageError> {
    if !std::path::Path::new(path).exists() {
        return Err(StorageError::ImportRefused(format!("{path} does not exist")));
    }
    let source = crate::store::allocator::open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: u32 = source.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= schema::latest_version() {
        return snapshot(&source, path, now, phones);
    }
    let copy = UpgradedCopy(format!("{path}.import-copy"));
    copy.remove();
    // A consistent snapshot, WAL included, taken through a read-only connection.
    source.execute("VACUUM INTO ?1", [&copy.0])?;
    drop(source);
    SqliteStore::open(&copy.0, 1, phones)?.close()?;
    let upgraded = crate::store::allocator::open(&copy.0, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    snapshot(&upgraded, path, now, phones)
}

/// A database file made for one import, removed with its WAL when dropped.
struct UpgradedCopy(String);

impl UpgradedCopy {
    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0));
        }
    }
}

impl Drop for UpgradedCopy {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The rows that move, from `conn`, a database at the latest schema (`path` names it in errors).
fn snapshot(conn: &rusqlite::Connection, path: &str, now: i64, phones: &PhoneHasher) -> Result<Snapshot, StorageError> {
    let mut snapshot = Snapshot::default();
    let mut users = conn.prepare("SELECT id, address, uid, name, status, photo, created_at, last_login, ts FROM users ORDER BY id")?;
    snapshot.users = users
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut sessions = conn.prepare(
        "SELECT token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at, via FROM sessions WHERE expires_at > ?1",
    )?;
    snapshot.sessions = sessions
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut links = conn.prepare("SELECT address, user_id, uid, linked_at FROM linked_addresses ORDER BY user_id, address")?;
    snapshot.links = links.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<_>>()?;
    // Address books cannot be hashed again: their phones are gone. They move only under the key they were hashed with.
    // One user tells the key: every hash in a file was made under the same one.
    let sample: Option<(String, i64)> = conn
        .query_row("SELECT address, address_hash FROM users WHERE address_hash IS NOT NULL LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if sample.is_some_and(|(address, hash)| phones.hash(&address) != hash) {
        return Err(StorageError::ImportRefused(format!(
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
    let mut attachments = conn.prepare("SELECT name FROM attachment_files ORDER BY name")?;
    snapshot.attachments = attachments.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let gids: Vec<i64> =
        conn.prepare("SELECT gid FROM chat_groups ORDER BY gid")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for gid in gids {
        snapshot.groups.extend(groups::group(conn, gid)?);
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::ServerKeys;

    #[test]
    fn a_file_of_an_earlier_release_is_upgraded_in_a_copy_and_hashed_with_the_given_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db").to_string_lossy().into_owned();
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            schema::apply_before(&conn, 6).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 INSERT INTO users (address, uid, created_at, last_login, ts) VALUES ('18005550001', '1', 0, 0, 0);
                 INSERT INTO contacts (owner_id, phone, added_at) VALUES (1, '18005550002', 0);",
            )
            .unwrap();
        }
        let phones = ServerKeys::from_secret(b"the new instances' key").phones;
        let snapshot = read_sqlite(&path, 0, &phones).unwrap();
        assert_eq!(snapshot.contacts, vec![(1, phones.hash("18005550002"))]);
        assert_eq!(snapshot.users.len(), 1);

        // The file itself is as it was, phones and all, for its own instance and key.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 5);
        let phone: String = conn.query_row("SELECT phone FROM contacts", [], |r| r.get(0)).unwrap();
        assert_eq!(phone, "18005550002");
        let left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(left.iter().all(|name| !name.contains("import-copy")), "the copy is removed: {left:?}");
    }

    #[test]
    fn address_books_hashed_under_another_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db").to_string_lossy().into_owned();
        let theirs = ServerKeys::from_secret(b"the SQLite instance's key").phones;
        let db = SqliteStore::open(&path, 1, &theirs).unwrap();
        db.blocking(move |conn| {
            conn.execute(
                "INSERT INTO users (address, address_hash, uid, created_at, last_login, ts) VALUES ('18005550001', ?1, '1', 0, 0, 0)",
                [theirs.hash("18005550001")],
            )
        })
        .unwrap();
        db.close().unwrap();
        let ours = ServerKeys::from_secret(b"another key").phones;
        let refused = read_sqlite(&path, 0, &ours).err().expect("refused").to_string();
        assert!(refused.contains("under another server key"), "{refused}");
        assert!(read_sqlite(&path, 0, &ServerKeys::from_secret(b"the SQLite instance's key").phones).is_ok());
    }
}
