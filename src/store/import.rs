//! Moving an instance from its SQLite file to PostgreSQL (`otpgate migrate --from-sqlite`):
//! users keep their ids, sessions (token hashes) stay valid, and address books, photos,
//! push registrations, groups and linked addresses stay.
//! Pending codes and queued messages are not carried over: they live minutes, and a user
//! who was waiting for one asks again.

pub use crate::store::records::Imported;
use std::sync::Arc;

use crate::store::{sqlite, Backend, Db, StorageError};

impl Db {
    /// Copies what the SQLite database at `path` holds of users, sessions and contacts
    /// into this PostgreSQL database, in one transaction; refused when it has users already.
    pub async fn import_sqlite(&self, path: &str) -> Result<Imported, StorageError> {
        match &self.backend {
            Backend::Sqlite(_) => Err(StorageError::ImportRefused("importing a SQLite database needs DATABASE_URL (PostgreSQL)".into())),
            Backend::Postgres(pg) => {
                let (path, now, phones) = (path.to_string(), self.clock().now(), self.phones.clone());
                let snapshot = tokio::task::spawn_blocking(move || sqlite::import::read_sqlite(&path, now, &phones))
                    .await
                    .map_err(|e| StorageError::TaskFailed { task: "reading the SQLite database", error: Arc::new(e) })??;
                pg.import(snapshot, &self.phones).await
            }
        }
    }
}
