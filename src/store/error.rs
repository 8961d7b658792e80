//! Why a database call failed, on either backend.

use std::sync::Arc;

use tokio_postgres::error::SqlState;

/// Why a database call failed. SQLite's own error is kept whole, so a caller can tell a
/// full disk from a constraint, and a group commit's failure reaches every job in it.
#[derive(Debug, Clone)]
pub enum StorageError {
    Sqlite(Arc<rusqlite::Error>),
    /// PostgreSQL's own error.
    Postgres(Arc<tokio_postgres::Error>),
    /// No connection could be had from the pool (the server is down or every one is busy).
    Pool(String),
    /// Some errors (disk full, I/O) make SQLite roll back the whole group commit.
    RolledBack,
    /// The job panicked; the writer thread lives on.
    Panicked,
    /// The database was closed at shutdown.
    Closed,
    /// SQLite's writer thread stopped while the database was open: nothing more can be
    /// written until the service restarts.
    WriterStopped,
    /// A thread of the SQLite store (`thread`: its writer, its checkpointer) could not be started.
    ThreadNotStarted {
        thread: &'static str,
        error: Arc<std::io::Error>,
    },
    /// A blocking task (`task`: a read on SQLite's reader pool, reading a SQLite file to
    /// import, writing or reading an uploaded file) panicked or was cancelled.
    TaskFailed {
        task: &'static str,
        error: Arc<tokio::task::JoinError>,
    },
    /// `DATABASE_URL` cannot be used, and why (never with its password).
    BadUrl(String),
    /// An import from SQLite cannot go ahead, and why: no such file, another key, a target
    /// database with users already, or no PostgreSQL to import into.
    ImportRefused(String),
    /// A row the transaction wrote was not there when it read it back.
    Vanished(String),
    /// An uploaded file could not be written or read (`FILES_DIR`).
    Files(String),
    /// The SQLite file was removed or replaced under the open connections.
    Unlinked(String),
    /// PostgreSQL did not answer within `DB_QUERY_TIMEOUT_MS` (a frozen server).
    TimedOut(std::time::Duration),
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Sqlite(Arc::new(e))
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        StorageError::Postgres(Arc::new(e))
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Sqlite(e) => write!(f, "{e}"),
            StorageError::Postgres(e) => f.write_str(&describe(e)),
            StorageError::Pool(why) => write!(f, "no database connection: {why}"),
            StorageError::RolledBack => f.write_str("the write transaction was rolled back"),
            StorageError::Panicked => f.write_str("database job panicked"),
            StorageError::Closed => f.write_str("the database is closed"),
            StorageError::WriterStopped => f.write_str("the database writer thread has stopped; restart the service"),
            StorageError::ThreadNotStarted { thread, error } => write!(f, "cannot start the database {thread}: {error}"),
            StorageError::TaskFailed { task, error } => write!(f, "{task} failed: {error}"),
            StorageError::BadUrl(why) => write!(f, "DATABASE_URL {why}"),
            StorageError::ImportRefused(why) => f.write_str(why),
            StorageError::Vanished(what) => write!(f, "{what} vanished from its own transaction"),
            StorageError::Files(why) => f.write_str(why),
            StorageError::Unlinked(why) => f.write_str(why),
            StorageError::TimedOut(waited) => {
                write!(f, "PostgreSQL did not answer within {} ms (DB_QUERY_TIMEOUT_MS)", waited.as_millis())
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Sqlite(e) => Some(e.as_ref()),
            StorageError::Postgres(e) => Some(e.as_ref()),
            StorageError::ThreadNotStarted { error, .. } => Some(error.as_ref()),
            StorageError::TaskFailed { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

/// `error` with the server's message, for the "db error" that tokio-postgres says alone.
/// The message only: its DETAIL may quote the row (an address), and no log may hold one.
pub(in crate::store) fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = with_causes(error);
    if error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        text.push_str(" (the server is a standby: list every host in DATABASE_URL with ?target_session_attrs=read-write)");
    }
    text
}

/// An error with its causes: a failed connection says only "error performing TLS
/// handshake" or "error connecting to server" without them.
pub(in crate::store) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            // Its message only (see `describe`).
            text = format!("{text}: {}: {}", db.severity(), db.message());
            break;
        }
        let next = e.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = e.source();
    }
    text
}
