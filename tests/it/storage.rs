//! The writer thread: jobs waiting together are committed together, yet each job
//! succeeds or fails on its own, and the WAL does not grow without bound.

use crate::common::eventually;
use otpgate::store::sqlite::{atomically, SqliteStore, CHECKPOINT_PAGES};
use rusqlite::params;
use std::sync::Arc;

fn phones() -> otpgate::domain::keys::PhoneHasher {
    otpgate::domain::keys::ServerKeys::from_secret(b"storage tests").phones
}

fn open() -> (tempfile::TempDir, Arc<SqliteStore>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.db").to_string_lossy().into_owned();
    let db = SqliteStore::open(&path, 2, &phones()).unwrap();
    db.blocking(|conn| conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")).unwrap();
    (dir, db, path)
}

async fn count(db: &Arc<SqliteStore>) -> i64 {
    db.read(|conn| conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))).await.unwrap()
}

#[actix_web::test]
async fn a_failing_job_is_rolled_back_alone_within_its_group() {
    let (_dir, db, _) = open();
    // The first job holds the writer until every other job is queued, so they run as one group.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let held = db.call(move |_| {
        released.recv().expect("the test releases the writer");
        Ok(())
    });
    let insert = |id: i64, fail: bool| {
        db.call(move |conn| {
            conn.execute("INSERT INTO notes (id, body) VALUES (?1, 'x')", params![id])?;
            if fail {
                // A second statement fails: the insert above must not stay.
                conn.execute("INSERT INTO notes (id, body) VALUES (?1, NULL)", params![id + 1000])?;
            }
            Ok(id)
        })
    };
    let panicking = db.call(|conn| -> rusqlite::Result<()> {
        conn.execute("INSERT INTO notes (id, body) VALUES (50, 'x')", [])?;
        panic!("job bug");
    });
    // `join!` first polls its futures in order, and each job is queued when first polled:
    // the last future runs once the others are queued.
    let queued = async { release.send(()).unwrap() };
    let (held, a, b, c, panicked, d, ()) =
        tokio::join!(held, insert(1, false), insert(2, true), insert(3, false), panicking, insert(4, false), queued);
    held.unwrap();
    assert_eq!((a.unwrap(), c.unwrap(), d.unwrap()), (1, 3, 4));
    assert!(b.unwrap_err().to_string().contains("NOT NULL"));
    assert!(panicked.unwrap_err().to_string().contains("panicked"));
    let ids: Vec<i64> =
        db.read(|conn| conn.prepare("SELECT id FROM notes ORDER BY id")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
    assert_eq!(ids, [1, 3, 4], "the failed and panicked jobs left nothing");
}

#[actix_web::test]
async fn concurrent_writes_are_all_committed_and_survive_a_reopen() {
    let (_dir, db, path) = open();
    let writes: Vec<_> = (0..500i64)
        .map(|id| {
            let db = Arc::clone(&db);
            tokio::spawn(
                async move { db.call(move |conn| conn.execute("INSERT INTO notes (id, body) VALUES (?1, 'x')", params![id])).await },
            )
        })
        .collect();
    for written in writes {
        assert_eq!(written.await.unwrap().unwrap(), 1);
    }
    assert_eq!(count(&db).await, 500);
    db.close().unwrap();
    let reopened = SqliteStore::open(&path, 1, &phones()).unwrap();
    assert_eq!(count(&reopened).await, 500);
}

#[actix_web::test]
async fn the_wal_stays_bounded_under_sustained_writes() {
    let (_dir, db, path) = open();
    // One commit each, touching pages all over a random-keyed index: about 3 pages a
    // commit, several times the WAL's limit if nothing restarted the log.
    db.blocking(|conn| conn.execute_batch("CREATE INDEX notes_body ON notes (body)")).unwrap();
    let commits = 20_000i64;
    let wal_size = || std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
    // The largest the file ever was, seen after every commit: the writer truncates it when
    // it checkpoints, so its size at the end alone would not show how far it grew.
    let mut largest = 0;
    for i in 0..commits {
        let body = format!("{:016x}{}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), "y".repeat(200));
        db.call(move |conn| conn.execute("INSERT INTO notes (body) VALUES (?1)", [body])).await.unwrap();
        largest = largest.max(wal_size());
    }
    assert_eq!(count(&db).await, commits);
    // A frame is a 4 KiB page plus a 24-byte header; the commit that crosses the limit adds
    // a few pages more. The background checkpointer's pace plays no part: the writer's own
    // checkpoint waits for its turn instead of being skipped.
    let limit = (CHECKPOINT_PAGES as u64 + 1000) * (4096 + 24);
    assert!(largest < limit, "WAL grew to {largest} bytes, over {limit}");
    assert!(largest > limit / 2, "the WAL never filled ({largest} bytes): the test wrote too little to show the bound");
}

#[actix_web::test]
async fn committed_writes_reach_the_database_file_before_the_wal_fills() {
    let (_dir, db, path) = open();
    let marker = "committed-and-checkpointed-7f3a";
    db.call(move |conn| conn.execute("INSERT INTO notes (body) VALUES (?1)", [marker])).await.unwrap();
    // Once the writer is idle, the background checkpointer copies the frame into the
    // database file, long before the writer's own checkpoint at CHECKPOINT_PAGES would.
    let in_file = async || std::fs::read(&path).unwrap().windows(marker.len()).any(|w| w == marker.as_bytes());
    assert!(eventually(60, in_file).await, "the row is still only in the WAL after a minute");
    assert_eq!(count(&db).await, 1);
}

#[test]
fn atomically_keeps_all_of_a_step_or_none_of_it() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)").unwrap();
    let step = |id: i64, fail: bool| {
        atomically(&conn, |tx| {
            tx.execute("INSERT INTO notes (id, body) VALUES (?1, 'x')", [id])?;
            if fail {
                tx.execute("INSERT INTO notes (id, body) VALUES (?1, NULL)", [id + 1000])?;
            }
            Ok(id)
        })
    };
    assert_eq!(step(1, false).unwrap(), 1);
    assert!(step(2, true).is_err());
    // Nested in an outer transaction, a failed step is undone without undoing the outer one.
    conn.execute_batch("BEGIN").unwrap();
    assert!(step(3, true).is_err());
    step(4, false).unwrap();
    conn.execute_batch("COMMIT").unwrap();
    let ids: Vec<i64> =
        conn.prepare("SELECT id FROM notes ORDER BY id").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(ids, vec![1, 4]);
}

#[test]
fn statements_are_not_recompiled_for_each_value_after_analyze() {
    let (_dir, db, path) = open();
    db.blocking(|conn| {
        conn.execute_batch("CREATE INDEX notes_body ON notes (body)")?;
        for i in 0..2000 {
            conn.execute("INSERT INTO notes (body) VALUES (?1)", [format!("note {}", i % 50)])?;
        }
        // What an operator's `PRAGMA optimize` does on a grown database.
        conn.execute_batch("ANALYZE")
    })
    .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut lookup = conn.prepare("SELECT count(*) FROM notes WHERE body = ?1").unwrap();
    for i in 0..20 {
        let found: i64 = lookup.query_row([format!("note {i}")], |r| r.get(0)).unwrap();
        assert_eq!(found, 40);
    }
    // With SQLite's STAT4 statistics, binding a new value recompiles the statement: that
    // was most of the cost of recording a login on the preloaded benchmark database.
    assert_eq!(lookup.get_status(rusqlite::StatementStatus::RePrepare), 0);
}
