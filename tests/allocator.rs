//! SQLite allocates from mimalloc once routed there (src/store/allocator.rs). A test binary of
//! its own: SQLite takes the allocator only before its first use in the process.

use rusqlite::ffi;

#[test]
fn sqlite_allocates_from_mimalloc() {
    // The service's start looks a setting up before it opens the database: that first use
    // of SQLite must not keep it on the system allocator.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.db");
    assert_eq!(otpgate::store::setting_before_open(&missing.to_string_lossy(), "any").unwrap(), None);
    assert!(otpgate::store::allocator::route_sqlite(), "SQLite took the allocator before its first use");
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(100000));").unwrap();
    let blob_len: i64 = conn.query_row("SELECT length(x) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(blob_len, 100_000);

    // SAFETY: a block from sqlite3_malloc, checked and then given back to sqlite3_free.
    unsafe {
        let block = ffi::sqlite3_malloc(4096);
        assert!(!block.is_null());
        assert!(libmimalloc_sys::mi_is_in_heap_region(block), "SQLite's block comes from mimalloc");
        assert!(ffi::sqlite3_msize(block) >= 4096, "SQLite learns the block's size from mimalloc");
        ffi::sqlite3_free(block);
    }
    // A block from the system allocator is told apart, so the check above can fail.
    // SAFETY: libc's malloc and free, paired.
    unsafe {
        let system = libc::malloc(4096);
        assert!(!libmimalloc_sys::mi_is_in_heap_region(system));
        libc::free(system);
    }
    assert!(otpgate::store::allocator::route_sqlite(), "asking again changes nothing");
}
