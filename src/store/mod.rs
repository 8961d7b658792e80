//! The store: [`Db`], whose methods are the only way to the data. Each method answers
//! from the backend the data lives in, SQLite (`sqlite/`) or PostgreSQL (`postgres/`),
//! by an exhaustive `match` on [`Backend`] (written by `dispatch!` where both arms make
//! the same call): a method that one backend lacks does not compile. The facade's
//! methods are grouped by topic in files of the same names as the backends' (`links.rs`
//! beside `sqlite/links.rs` and `postgres/links.rs`), and what both backends answer with
//! is defined once, in `records.rs`.

/// Awaits `$call` on the backend that holds the data, `$store` naming it (a
/// `SqliteStore` or a `PgStore`): for the `Db` methods whose two arms are the same code.
/// Both backends declare each method with the same arguments, so one call fits both;
/// where the arms differ, the `match` is written out.
macro_rules! dispatch {
    ($db:expr, |$store:ident| $call:expr) => {
        match &$db.backend {
            $crate::store::Backend::Sqlite($store) => $call.await,
            $crate::store::Backend::Postgres($store) => $call.await,
        }
    };
}

pub mod accounts;
pub mod allocator;
pub mod audit;
pub mod contacts;
pub mod courier;
mod error;
pub mod files;
pub mod groups;
pub mod import;
pub mod links;
mod login;
pub mod operators;
pub mod outbox;
pub mod postgres;
pub mod records;
pub mod sessions;
pub mod shared_breakers;
pub mod shared_limits;
pub mod sqlite;
pub mod users;

pub use error::StorageError;
pub use records::{CodeGuess, CompletedLogin, LoginRecord, NewChallenge};
pub use sqlite::setting_before_open;

use std::sync::Arc;

use crate::domain::clock::Clock;
use crate::domain::keys::{PhoneHasher, ServerKeys};

/// The data, wherever it lives, and the rules' clock.
pub struct Db {
    backend: Backend,
    /// The time that codes, claims, sessions and deliveries expire by.
    clock: Clock,
    /// Address books are stored, and users matched, by these hashes of phones.
    phones: PhoneHasher,
}

/// Where the data lives: one SQLite file (one instance), or a PostgreSQL server that
/// several instances share.
enum Backend {
    Sqlite(Arc<sqlite::SqliteStore>),
    Postgres(postgres::PgStore),
}

impl Db {
    /// Opens the SQLite database file (created if missing), applies the schema, and opens
    /// the writer plus `readers` reader connections. `phones` hashes address books.
    pub fn open(path: &str, readers: usize, phones: &PhoneHasher) -> Result<Arc<Db>, StorageError> {
        let store = sqlite::SqliteStore::open(path, readers, phones)?;
        Ok(Arc::new(Db { backend: Backend::Sqlite(store), clock: Clock::system(), phones: phones.clone() }))
    }

    /// [`Db::open`] with the server's keys, leaving no secret in clear in the database;
    /// `had_key` says that it holds a key an earlier release kept. `clock` is the time the
    /// service's rules run on.
    pub fn open_without_secrets(
        path: &str,
        readers: usize,
        clock: Clock,
        keys: &ServerKeys,
        had_key: bool,
    ) -> Result<Arc<Db>, StorageError> {
        let store = sqlite::SqliteStore::open_without_secrets(path, readers, keys, had_key)?;
        Ok(Arc::new(Db { backend: Backend::Sqlite(store), clock, phones: keys.phones.clone() }))
    }

    /// Connects to the PostgreSQL server at `url` with a pool of `pool_size` connections
    /// and applies the migrations it has not had yet. `phones` hashes address books.
    pub async fn connect_postgres(
        url: &str,
        settings: postgres::PgSettings,
        clock: Clock,
        phones: &PhoneHasher,
    ) -> Result<Arc<Db>, StorageError> {
        let store = postgres::PgStore::connect(url, settings, phones).await?;
        Ok(Arc::new(Db { backend: Backend::Postgres(store), clock, phones: phones.clone() }))
    }

    /// The time that codes, claims, sessions and deliveries expire by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Closes the database at shutdown; later calls fail at once. SQLite finishes the
    /// queued writes, checkpoints the WAL into the database file and closes every
    /// connection (and then removes the WAL); PostgreSQL's idle connections end.
    pub fn close(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.close(),
            Backend::Postgres(pg) => pg.close(),
        }
    }

    /// A real write, so readiness fails when the database is read-only, locked, full or
    /// unreachable (and, for SQLite, when its file was removed or replaced).
    pub async fn probe_write(&self) -> Result<(), StorageError> {
        dispatch!(self, |store| store.probe_write())
    }
}

/// Wall-clock unix seconds, for what is not a rule's time (reply `ts`, markers, webhook
/// signatures); the rules read [`Db::clock`].
pub fn now() -> i64 {
    Clock::system().now()
}

#[cfg(test)]
mod tests {
    /// A step takes the same number and name in `schema.sql` and in `migrations/postgres/`,
    /// also where it changes nothing on one of the two, so that either lists every step.
    #[test]
    fn both_backends_take_the_same_migration_steps() {
        let sqlite = super::sqlite::schema::steps();
        assert_eq!(sqlite, super::postgres::migration_steps());
        assert!(!sqlite.is_empty());
    }
}
