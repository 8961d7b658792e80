//! Applies `schema.sql`: the foundation statements at every start, then each
//! numbered migration step the database has not had yet, as recorded in
//! `PRAGMA user_version`.

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, TransactionBehavior};

use crate::domain::keys::PhoneHasher;

const SCHEMA: &str = include_str!("../../../schema.sql");
const STEP_MARKER: &str = "-- migration: ";

/// The foundation part of `schema` and its migration steps as (version, name, SQL), in
/// file order.
fn split(schema: &str) -> (String, Vec<(u32, &str, String)>) {
    let mut foundation = String::new();
    let mut steps: Vec<(u32, &str, String)> = Vec::new();
    for line in schema.lines() {
        if let Some(marker) = line.strip_prefix(STEP_MARKER) {
            let parsed = marker.trim().split_once(' ').and_then(|(number, name)| Some((number.parse().ok()?, name.trim())));
            let Some((version, name)) = parsed else { panic!("schema.sql: bad migration marker {line:?} (`{STEP_MARKER}N name`)") };
            steps.push((version, name, String::new()));
            continue;
        }
        let target = match steps.last_mut() {
            Some((_, _, sql)) => sql,
            None => &mut foundation,
        };
        target.push_str(line);
        target.push('\n');
    }
    (foundation, steps)
}

/// The schema version a fully migrated database has.
pub fn latest_version() -> u32 {
    split(SCHEMA).1.last().map_or(0, |(version, _, _)| *version)
}

/// The migration steps as (version, name): PostgreSQL's are the same (see `store::tests`).
#[cfg(test)]
pub(in crate::store) fn steps() -> Vec<(u32, String)> {
    split(SCHEMA).1.into_iter().map(|(version, name, _)| (version, name.to_string())).collect()
}

/// Brings the database up to the latest schema version. Steps that hash phones call
/// `otpgate_phone_hash(phone)`, which hashes with `phones`.
pub fn apply(conn: &mut Connection, phones: &PhoneHasher) -> rusqlite::Result<()> {
    let phones = phones.clone();
    conn.create_scalar_function("otpgate_phone_hash", 1, FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC, move |ctx| {
        Ok(phones.hash(&ctx.get::<String>(0)?))
    })?;
    let (foundation, steps) = split(SCHEMA);
    conn.execute_batch(&foundation)?;
    for (version, _, sql) in steps {
        // The version is read inside the write transaction, so two processes
        // starting on one database cannot both run a step.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version <= current {
            continue;
        }
        tx.execute_batch(&sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!("database schema upgraded to version {version}");
    }
    Ok(())
}

/// Creates the schema as a release before `version` left it: the foundation and the steps
/// before `version`. For tests of upgrades.
#[cfg(test)]
pub(in crate::store) fn apply_before(conn: &Connection, version: u32) -> rusqlite::Result<()> {
    let (foundation, steps) = split(SCHEMA);
    conn.execute_batch(&foundation)?;
    for (step, _, sql) in steps.iter().filter(|(step, _, _)| *step < version) {
        conn.execute_batch(sql)?;
        conn.pragma_update(None, "user_version", step)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_one_by_one_from_one() {
        let (foundation, steps) = split(SCHEMA);
        assert!(foundation.contains("CREATE TABLE IF NOT EXISTS otp_challenges"));
        let versions: Vec<u32> = steps.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(versions, (1..=versions.len() as u32).collect::<Vec<_>>());
        for (_, name, _) in &steps {
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "step name {name:?}");
        }
    }

    fn phones() -> PhoneHasher {
        crate::domain::keys::ServerKeys::from_secret(b"schema tests").phones
    }

    #[test]
    fn applying_twice_is_harmless() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, &phones()).unwrap();
        apply(&mut conn, &phones()).unwrap();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, latest_version());
        assert!(latest_version() >= 1);
    }

    /// Every file of the database at `path` that holds `needle`.
    fn files_holding(path: &std::path::Path, needle: &[u8]) -> Vec<String> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| format!("{}{suffix}", path.display()))
            .filter(|file| std::fs::read(file).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
            .collect()
    }

    #[test]
    fn an_upgrade_hashes_address_books_and_leaves_no_phone_in_the_file() {
        const STRANGER: &str = "18005559999";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db");
        {
            // A database of the release before: its address books hold phones.
            let conn = Connection::open(&path).unwrap();
            apply_before(&conn, 6).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO users (address, uid, created_at, last_login, ts) VALUES ('18005550001', '1', 0, 0, 0), ('18005550002', '2', 0, 0, 0);
                 INSERT INTO contacts (owner_id, phone, added_at) VALUES (1, '18005550002', 0), (1, '{STRANGER}', 0), (2, '18005550001', 0);
                 INSERT INTO settings (key, value) VALUES ('rewritten_without_secrets', x'00');"
            ))
            .unwrap();
        }
        assert!(!files_holding(&path, STRANGER.as_bytes()).is_empty(), "the test starts from a phone in clear");

        let keys = crate::domain::keys::ServerKeys::from_secret(b"schema tests");
        let db = crate::store::sqlite::SqliteStore::open_without_secrets(&path.to_string_lossy(), 1, &keys, false).unwrap();
        let (stored, matched, counts) = db
            .blocking(|conn| {
                let mut query = conn.prepare("SELECT owner_id, phone_hash FROM contacts ORDER BY owner_id, phone_hash")?;
                let stored = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
                let matched: i64 =
                    conn.query_row("SELECT count(*) FROM contacts c JOIN users u ON u.address_hash = c.phone_hash", [], |r| r.get(0))?;
                let mut query = conn.prepare("SELECT id, contact_count FROM users ORDER BY id")?;
                let counts = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
                Ok((stored, matched, counts))
            })
            .unwrap();
        db.close().unwrap();
        let hash = |phone: &str| keys.phones.hash(phone);
        let mut expected = vec![(1, hash("18005550002")), (1, hash(STRANGER)), (2, hash("18005550001"))];
        expected.sort_unstable();
        assert_eq!(stored, expected);
        assert_eq!(matched, 2, "users are found by the hash of their address");
        assert_eq!(counts, vec![(1, 2), (2, 1)], "each user's contacts are counted");
        assert_eq!(files_holding(&path, STRANGER.as_bytes()), Vec::<String>::new(), "not even in a free page");
    }
}
