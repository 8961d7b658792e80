//! One allocator for the whole process, mimalloc: Rust's allocations and SQLite's.
//! glibc's malloc spent much of the login paths' CPU consolidating fast bins and
//! searching free lists (docs/performance-log.md has the profiles).
//! SQLite allocates through its own hooks, so it is pointed at mimalloc separately,
//! which it accepts only before its first use: every connection of the service is
//! opened through [`open`], which routes first.

use rusqlite::{ffi, Connection, OpenFlags};
use std::os::raw::{c_int, c_void};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Opens a SQLite connection, SQLite's allocations routed to mimalloc first (see
/// [`route_sqlite`]); says so in the log when they could not be.
pub fn open(path: &str, flags: OpenFlags) -> rusqlite::Result<Connection> {
    if !route_sqlite() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("SQLite was in use before its allocator could be set: it allocates from the system allocator, which is slower")
        });
    }
    Connection::open_with_flags(path, flags)
}

/// Points SQLite's allocations at mimalloc. SQLite accepts this only before its first
/// use in the process; after that (a connection opened elsewhere first), SQLite keeps
/// the system allocator, which works the same, only slower. Returns whether it took.
pub fn route_sqlite() -> bool {
    static ROUTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROUTED.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(sqlite_malloc),
            xFree: Some(sqlite_free),
            xRealloc: Some(sqlite_realloc),
            xSize: Some(sqlite_size),
            xRoundup: Some(sqlite_roundup),
            xInit: Some(sqlite_init),
            xShutdown: Some(sqlite_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to the methods and copies them; the
        // functions below keep SQLite's contract (8-byte alignment, sizes of live blocks).
        unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const ffi::sqlite3_mem_methods) == ffi::SQLITE_OK }
    })
}

// SQLite never asks for zero or negative sizes (it checks before calling).
unsafe extern "C" fn sqlite_malloc(size: c_int) -> *mut c_void {
    libmimalloc_sys::mi_malloc(size as usize)
}

unsafe extern "C" fn sqlite_free(block: *mut c_void) {
    libmimalloc_sys::mi_free(block)
}

unsafe extern "C" fn sqlite_realloc(block: *mut c_void, size: c_int) -> *mut c_void {
    libmimalloc_sys::mi_realloc(block, size as usize)
}

unsafe extern "C" fn sqlite_size(block: *mut c_void) -> c_int {
    libmimalloc_sys::mi_usable_size(block) as c_int
}

unsafe extern "C" fn sqlite_roundup(size: c_int) -> c_int {
    libmimalloc_sys::mi_good_size(size as usize) as c_int
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}
