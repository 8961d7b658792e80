//! PostgreSQL storage, for several instances on one database.
//!
//! The same queries as the SQLite store, made safe for concurrent writers: what SQLite
//! gets from its single writer, this gets from row locks (`FOR UPDATE`), `SKIP LOCKED`
//! for work queues and purges, and transaction-scoped advisory locks.
//!
//! Each method is written once, as an `async move` block on a pooled connection that
//! `PgStore::retrying` (or `PgStore::persisting`) runs, and runs again on a fresh
//! connection when a failover interrupted it and its `Retry` allows. The block borrows
//! what it reads from the method's arguments, so a second run finds them unchanged.

mod accounts;
mod audit;
mod contacts;
mod courier;
mod files;
mod groups;
mod import;
mod links;
mod login;
mod operators;
mod outbox;
mod pool;
mod sessions;
mod users;

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::FutureExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient as _;
use tokio_postgres::Row;

use crate::config::DbStatements;
use crate::domain::clock::Clock;
use crate::domain::keys::PhoneHasher;
use crate::store::error::StorageError;

use crate::store::error::with_causes;
pub use pool::check_url;
use pool::{driver_url, tls, Fencing, HostByHost, StaleConnections};

/// The schema steps, in order: (version, name, SQL), each in `migrations/postgres/NNN_name.sql`.
/// They are SQLite's steps (`-- migration: N name` in `schema.sql`), under the same numbers
/// and names; a step that changes nothing here says why in its file. Append new steps; never
/// edit an applied one.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "sessions_and_profiles", include_str!("../../../migrations/postgres/001_sessions_and_profiles.sql")),
    (2, "sealed_messages", include_str!("../../../migrations/postgres/002_sealed_messages.sql")),
    (3, "challenge_ids", include_str!("../../../migrations/postgres/003_challenge_ids.sql")),
    (4, "photos_and_push", include_str!("../../../migrations/postgres/004_photos_and_push.sql")),
    (5, "groups", include_str!("../../../migrations/postgres/005_groups.sql")),
    (6, "hashed_contacts", include_str!("../../../migrations/postgres/006_hashed_contacts.sql")),
    (7, "account_deletion", include_str!("../../../migrations/postgres/007_account_deletion.sql")),
    (8, "audit_events", include_str!("../../../migrations/postgres/008_audit_events.sql")),
    (9, "linked_addresses", include_str!("../../../migrations/postgres/009_linked_addresses.sql")),
    (10, "file_references", include_str!("../../../migrations/postgres/010_file_references.sql")),
    (11, "contact_counts", include_str!("../../../migrations/postgres/011_contact_counts.sql")),
    (12, "login_functions", include_str!("../../../migrations/postgres/012_login_functions.sql")),
    (13, "delivery_routes", include_str!("../../../migrations/postgres/013_delivery_routes.sql")),
];

/// How releases before the steps took SQLite's numbers recorded them in
/// `schema_migrations`: each name they recorded, and the steps it stands for now (their
/// first, `initial`, holds steps 1 to 3). A database that has `initial` is renumbered once.
const EARLIER_NUMBERING: &[(&str, &[u32])] = &[
    ("initial", &[1, 2, 3]),
    ("photos_and_push", &[4]),
    ("groups", &[5]),
    ("hashed_contacts", &[6]),
    ("account_deletion", &[7]),
    ("audit_events", &[8]),
    ("linked_addresses", &[9]),
    ("file_references", &[10]),
    ("login_functions", &[12]),
    ("contact_counts", &[11]),
];

/// The step whose file leaves the phones of address books for the service to hash.
const HASHED_CONTACTS: u32 = 6;
/// Rows hashed per round trip when address books are moved to hashes.
const REHASH_BATCH: i64 = 10_000;

/// Key of the advisory lock that migrations take, so that instances starting together
/// apply each step once.
const MIGRATION_LOCK: i64 = 0x6f74_7067_6174_6501;

/// Longest a request waits for a pooled connection: with every connection busy, requests
/// fail instead of piling up. Opening one is bounded per host (see [`PgSettings::connect_timeout`]).
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause between two tries of an operation that persists through a failover (see
/// [`PgStore::persisting`]): until a standby is promoted every host refuses, and each try
/// costs a connection attempt per host.
const PERSIST_PAUSE: Duration = Duration::from_millis(200);

/// How the pool connects and how long it waits for the server.
#[derive(Debug, Clone, Copy)]
pub struct PgSettings {
    /// Connections per instance.
    pub pool_size: usize,
    /// Longest one host may take to accept a connection, finish TLS, the startup and
    /// authentication, and say whether it takes writes; then the next host is tried.
    pub connect_timeout: Duration,
    /// Longest one operation waits for the server's answers. A frozen server keeps its
    /// connections open and answers nothing: past this the operation fails (or is
    /// retried where that is safe) and the idle connections are dropped.
    pub query_timeout: Duration,
    /// Prepared statements, or unnamed ones for a transaction-pooling proxy.
    pub statements: DbStatements,
}

impl PgSettings {
    /// Defaults for tests and tools: those of `DB_CONNECT_TIMEOUT_MS`, `DB_QUERY_TIMEOUT_MS`
    /// and `DB_STATEMENTS`.
    pub fn with_pool_size(pool_size: usize) -> PgSettings {
        PgSettings {
            pool_size,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(10),
            statements: DbStatements::Prepared,
        }
    }
}

/// A pool of connections to one PostgreSQL database, which other instances may share.
pub struct PgStore {
    pool: Pool,
    query_timeout: Duration,
    statements: DbStatements,
    stale: Arc<StaleConnections>,
    fencing: Arc<Fencing>,
}

impl PgStore {
    /// Connects to the database at `url` (TLS as its `sslmode` says: `prefer` when it says
    /// nothing; see [`CertificateCheck`]) with `settings`, and applies pending migrations.
    /// `phones` hashes the address books an earlier release kept in clear.
    pub async fn connect(url: &str, settings: PgSettings, phones: &PhoneHasher) -> Result<PgStore, StorageError> {
        let store = PgStore::open(url, settings)?;
        let applied = store.migrate(phones).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied PostgreSQL schema migrations");
        }
        Ok(store)
    }

    /// The pool alone: no connection is made until one is asked for.
    fn open(url: &str, settings: PgSettings) -> Result<PgStore, StorageError> {
        check_url(url).map_err(StorageError::BadUrl)?;
        let (url, check) = driver_url(url);
        let config = tokio_postgres::Config::from_str(&url)?;
        let fencing = Arc::new(Fencing::default());
        let connect = HostByHost {
            tls: tls(&check)?,
            timeout: settings.connect_timeout,
            last_good: AtomicUsize::new(0),
            fencing: Arc::clone(&fencing),
        };
        let manager = Manager::from_connect(config, connect, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let stale = Arc::new(StaleConnections::default());
        let pool = Pool::builder(manager)
            .pre_recycle(StaleConnections::check(Arc::clone(&stale)))
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            // Each host's attempt is bounded by `connect_timeout`: a bound on the whole
            // would cut off the later hosts behind a frozen first one.
            .create_timeout(None)
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StorageError::Pool(e.to_string()))?;
        Ok(PgStore { pool, query_timeout: settings.query_timeout, statements: settings.statements, stale, fencing })
    }

    /// Closes the pool at shutdown: idle connections end, and later calls fail at once.
    /// Closing a pool cannot fail; the result matches `SqliteStore::close`'s.
    pub fn close(&self) -> Result<(), StorageError> {
        self.pool.close();
        Ok(())
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, StorageError> {
        let started = Instant::now();
        // A host refused as a split brain's gives the driver's "timeout" error: say why instead.
        let client = self.pool.get().await.map_err(|e| StorageError::Pool(self.fencing.refusal().unwrap_or_else(|| with_causes(&e))))?;
        crate::domain::metrics::DB_POOL_WAIT.observe(started.elapsed().as_secs_f64());
        Ok(client)
    }

    /// Applies the migrations this database lacks; returns their versions. Each runs in a
    /// transaction of its own under an advisory lock, and checks again under the lock
    /// that no other instance applied it meanwhile. `phones` hashes address books.
    pub async fn migrate(&self, phones: &PhoneHasher) -> Result<Vec<u32>, StorageError> {
        self.in_statement_mode(async {
            let mut client = self.client().await?;
            {
                // Under the lock too: concurrent CREATE TABLE IF NOT EXISTS can fail on the catalog.
                let tx = client.transaction().await?;
                execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version    INTEGER PRIMARY KEY,
                         name       TEXT NOT NULL,
                         applied_at BIGINT NOT NULL -- unix seconds
                     )",
                )
                .await?;
                renumber_earlier_steps(&tx).await?;
                tx.commit().await?;
            }
            let mut applied = Vec::new();
            for row in query(&client, "SELECT version FROM schema_migrations", &[]).await? {
                applied.extend(u32::try_from(row.try_get::<_, i32>(0)?).ok());
            }
            let mut done = Vec::new();
            for &(version, name, sql) in MIGRATIONS.iter().filter(|(version, _, _)| !applied.contains(version)) {
                let tx = client.transaction().await?;
                execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
                let number = int(version);
                if query_opt(&tx, "SELECT 1 FROM schema_migrations WHERE version = $1", &[&number]).await?.is_some() {
                    continue;
                }
                tx.batch_execute(sql).await?;
                if version == HASHED_CONTACTS {
                    hash_contacts_in_clear(&tx, phones).await?;
                }
                execute(&tx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", &[&number, &name, &now()])
                    .await?;
                tx.commit().await?;
                done.push(version);
            }
            Ok(done)
        })
        .await
    }

    /// A real write, so readiness fails when the database is read-only or unreachable.
    pub async fn probe_write(&self) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| async move {
            let value = now().to_le_bytes();
            execute(
                &client,
                "INSERT INTO settings (key, value) VALUES ('readyz_probe', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&&value[..]],
            )
            .await?;
            Ok(())
        })
        .await
    }
}

/// How a failure that a failover causes left the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    /// The server refused the statement: nothing of the transaction was committed
    /// (a primary demoted to a standby answers writes with `read_only_sql_transaction`).
    NotApplied,
    /// The connection closed, the server shut down, or it stopped answering: a COMMIT
    /// in flight may or may not have been applied.
    Unknown,
}

/// Whether `error` is what a server that went away, froze or was demoted answers.
fn interrupted(error: &StorageError) -> Option<Interrupted> {
    let e = match error {
        StorageError::TimedOut(_) => return Some(Interrupted::Unknown),
        StorageError::Postgres(e) => e,
        _ => return None,
    };
    match e.code() {
        Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION || *code == SqlState::CANNOT_CONNECT_NOW => {
            return Some(Interrupted::NotApplied)
        }
        Some(code) if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN => return Some(Interrupted::Unknown),
        Some(code) if code.code().starts_with("08") => return Some(Interrupted::Unknown),
        _ => {}
    }
    let io = std::error::Error::source(e.as_ref()).is_some_and(|cause| cause.is::<std::io::Error>());
    (e.is_closed() || io).then_some(Interrupted::Unknown)
}

/// When an operation interrupted by a failover may run again on a fresh connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Running it twice leaves what running it once does (reads, and writes that set a
    /// value, delete, or lease work that then waits for its lease).
    Always,
    /// Only when nothing of it was applied.
    IfNotApplied,
}

impl PgStore {
    /// Runs `operation` on a pooled connection, the server's answers within the query
    /// timeout (getting the connection has bounds of its own: the pool's wait and each
    /// host's connect timeout).
    async fn guarded<T, Fut>(&self, operation: impl FnOnce(Object) -> Fut) -> Result<T, StorageError>
    where
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let client = self.client().await?;
        self.timed(operation(client)).await
    }

    /// `work`, its statements sent as `DB_STATEMENTS` says (see [`statement_mode`]).
    fn in_statement_mode<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        STATEMENT_MODE.scope(self.statements, work)
    }

    /// `answers` within the query timeout. When a failover interrupted it, the idle
    /// connections go (they lead to the same server; the one it used is among them, back
    /// in the pool), and so do those in use once they come back, so that the next request
    /// connects afresh to whichever host takes writes.
    async fn timed<T>(&self, answers: impl Future<Output = Result<T, StorageError>>) -> Result<T, StorageError> {
        let answers = self.in_statement_mode(answers);
        let outcome = tokio::time::timeout(self.query_timeout, answers).await.unwrap_or(Err(StorageError::TimedOut(self.query_timeout)));
        if let Err(e) = &outcome {
            if interrupted(e).is_some() {
                self.stale.mark();
                let dropped = self.pool.retain(|_, _| false).removed.len();
                tracing::warn!(dropped, "PostgreSQL connection lost ({e}); idle connections dropped, new ones will be opened");
            }
        }
        outcome
    }

    /// [`guarded`](Self::guarded), and once more on a fresh connection when a failover
    /// interrupted the first run and `retry` allows it. `operation` is the method's body,
    /// given the connection: `|client| async move { .. }`.
    async fn retrying<T, Fut>(&self, retry: Retry, operation: impl Fn(Object) -> Fut) -> Result<T, StorageError>
    where
        Fut: Future<Output = Result<T, StorageError>>,
    {
        match self.guarded(&operation).await {
            Err(e) if may_retry(retry, &e) => {
                tracing::info!("retrying on a fresh PostgreSQL connection after: {e}");
                self.guarded(&operation).await
            }
            outcome => outcome,
        }
    }

    /// [`guarded`](Self::guarded), run again on fresh connections for up to the query
    /// timeout after the first failure while a failover keeps it from a host that takes
    /// writes: interrupted, or no connection to be had (no host takes writes yet, or the one
    /// that does is still starting). For the operations whose failure costs more than the
    /// wait (`doing` says which, for the logs), and that leave the same state when run twice.
    async fn persisting<T, Fut>(&self, doing: &str, operation: impl Fn(Object) -> Fut) -> Result<T, StorageError>
    where
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut failed = match self.guarded(&operation).await {
            Err(e) if self.may_persist(&e) => e,
            outcome => return outcome,
        };
        tracing::info!("{doing} again on fresh PostgreSQL connections for up to {} ms after: {failed}", self.query_timeout.as_millis());
        let deadline = Instant::now() + self.query_timeout;
        loop {
            match self.guarded(&operation).await {
                Err(e) if self.may_persist(&e) && Instant::now() < deadline => failed = e,
                outcome => return outcome,
            }
            tracing::debug!("{doing} again after: {failed}");
            tokio::time::sleep(PERSIST_PAUSE).await;
        }
    }

    /// Whether `error` is one a failover causes, after which [`persisting`](Self::persisting)
    /// tries again (not once the pool is closed at shutdown).
    fn may_persist(&self, error: &StorageError) -> bool {
        interrupted(error).is_some() || (matches!(error, StorageError::Pool(_)) && !self.pool.is_closed())
    }

    /// BEGIN and `sql` on a connection of its own (see [`Pipelined::begin_with`]); again
    /// on a fresh connection when a failover interrupted it, since nothing was written yet.
    async fn begin_retrying(&self, sql: &str, params: &[&dyn Param]) -> Result<(Pipelined, Option<Row>), StorageError> {
        self.retrying(Retry::Always, |client| Pipelined::begin_with(client, sql, params)).await
    }
}

/// Whether an operation that `retry` describes may run again after `error`.
fn may_retry(retry: Retry, error: &StorageError) -> bool {
    match interrupted(error) {
        Some(Interrupted::NotApplied) => true,
        Some(Interrupted::Unknown) => retry == Retry::Always,
        None => false,
    }
}

/// Wall-clock unix seconds, for the markers the store writes.
fn now() -> i64 {
    Clock::system().now()
}

/// The migration steps as (version, name): SQLite's are the same (see `store::tests`).
#[cfg(test)]
pub(in crate::store) fn migration_steps() -> Vec<(u32, String)> {
    MIGRATIONS.iter().map(|(version, name, _)| (*version, name.to_string())).collect()
}

/// The name of step `version`.
fn step_name(version: u32) -> &'static str {
    MIGRATIONS.iter().find(|(step, _, _)| *step == version).map_or("", |(_, name, _)| name)
}

/// Records the steps a database migrated by an earlier release has under their numbers
/// now (see [`EARLIER_NUMBERING`]), keeping when each was applied, so that none runs again.
/// Under the migration lock: another instance finds them renumbered.
async fn renumber_earlier_steps(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StorageError> {
    let first = EARLIER_NUMBERING[0].0;
    if query_opt(tx, "SELECT 1 FROM schema_migrations WHERE name = $1", &[&first]).await?.is_none() {
        return Ok(());
    }
    let recorded = query(tx, "DELETE FROM schema_migrations RETURNING version, name, applied_at", &[]).await?;
    let mut steps: Vec<(i32, String, i64)> = Vec::with_capacity(MIGRATIONS.len());
    for row in &recorded {
        let (version, name, applied_at): (i32, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        match EARLIER_NUMBERING.iter().find(|(earlier, _)| *earlier == name) {
            Some((_, now)) => steps.extend(now.iter().map(|&step| (int(step), step_name(step).to_string(), applied_at))),
            // Not a name of the earlier numbering: kept as it was.
            None => steps.push((version, name, applied_at)),
        }
    }
    let versions: Vec<i32> = steps.iter().map(|(version, _, _)| *version).collect();
    let names: Vec<String> = steps.iter().map(|(_, name, _)| name.clone()).collect();
    let times: Vec<i64> = steps.iter().map(|(_, _, applied_at)| *applied_at).collect();
    execute(
        tx,
        "INSERT INTO schema_migrations (version, name, applied_at) SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[])",
        &[&versions, &names, &times],
    )
    .await?;
    tracing::info!("renumbered the PostgreSQL schema steps an earlier release applied as SQLite's: {versions:?}");
    Ok(())
}

/// The Rust half of the hashed-contacts step: hashes every user's address and every
/// address-book phone kept in clear, then drops the table that held them.
async fn hash_contacts_in_clear(tx: &deadpool_postgres::Transaction<'_>, phones: &PhoneHasher) -> Result<(), StorageError> {
    let mut after = 0i64;
    loop {
        let users = query(tx, "SELECT id, address FROM users WHERE id > $1 ORDER BY id LIMIT $2", &[&after, &REHASH_BATCH]).await?;
        let Some(last) = users.last() else { break };
        after = last.try_get(0)?;
        let ids = users.iter().map(|r| r.try_get::<_, i64>(0)).collect::<Result<Vec<_>, _>>()?;
        let hashes = users.iter().map(|r| r.try_get::<_, &str>(1).map(|address| phones.hash(address))).collect::<Result<Vec<_>, _>>()?;
        execute(
            tx,
            "UPDATE users SET address_hash = h.hash FROM unnest($1::bigint[], $2::bigint[]) AS h(id, hash) WHERE users.id = h.id",
            &[&ids, &hashes],
        )
        .await?;
    }
    let (mut owner, mut phone) = (i64::MIN, String::new());
    loop {
        let rows = query(
            tx,
            "SELECT owner_id, phone FROM contacts_in_clear WHERE (owner_id, phone) > ($1, $2) ORDER BY owner_id, phone LIMIT $3",
            &[&owner, &phone, &REHASH_BATCH],
        )
        .await?;
        let Some(last) = rows.last() else { break };
        (owner, phone) = (last.try_get(0)?, last.try_get(1)?);
        let owners = rows.iter().map(|r| r.try_get::<_, i64>(0)).collect::<Result<Vec<_>, _>>()?;
        let hashes = rows.iter().map(|r| r.try_get::<_, &str>(1).map(|phone| phones.hash(phone))).collect::<Result<Vec<_>, _>>()?;
        execute(
            tx,
            "INSERT INTO contacts (owner_id, phone_hash) SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING",
            &[&owners, &hashes],
        )
        .await?;
    }
    tx.batch_execute(
        "DROP TABLE contacts_in_clear;
         CREATE INDEX users_address_hash ON users (address_hash, ts);
         -- Finds who has a phone as a contact when that phone joins or its profile changes.
         CREATE INDEX contacts_phone_hash ON contacts (phone_hash, owner_id);",
    )
    .await?;
    Ok(())
}

/// A counter read from an INTEGER column; those are never negative.
fn counter(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A counter for an INTEGER column, saturating where PostgreSQL's integer ends.
fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// An affected-row count.
fn rows(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

/// A transaction whose BEGIN is sent with its first statement, and whose last statement
/// is sent with its COMMIT: a request waits for the database twice, not once per statement.
/// Prepared statements are prepared before they are sent together, since a statement sent
/// after a COMMIT in the same batch would run outside the transaction; unnamed ones are
/// parsed with their parameters. Dropped open (an early return, an error, a cancelled
/// request), it is rolled back, like tokio-postgres's own.
struct Pipelined {
    client: Object,
    open: bool,
}

impl Pipelined {
    /// BEGIN, then `sql`, on `client`: its row, if any.
    async fn begin_with(client: Object, sql: &str, params: &[&dyn Param]) -> Result<(Pipelined, Option<Row>), StorageError> {
        let prepared = match statement_mode() {
            DbStatements::Prepared => Some(client.prepare_cached(sql).await?),
            DbStatements::Unnamed => None,
        };
        let tx = Pipelined { client, open: true };
        count_statements(2);
        // Requests are sent in the order they are first polled, and `join` polls in order.
        let begin = tx.client.batch_execute("BEGIN");
        let (begun, row) = match &prepared {
            Some(statement) => futures_util::future::join(begin, tx.client.query_opt(statement, &values(params))).await,
            None => futures_util::future::join(begin, tx.client.query_typed_opt(sql, &typed(params))).await,
        };
        begun?;
        let row = row?;
        Ok((tx, row))
    }

    /// `sql` inside the transaction, before its last statement: the statement's row, if any.
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, StorageError> {
        query_opt(&self.client, sql, params).await
    }

    /// `sql`, then COMMIT: the statement's row count.
    async fn execute_and_commit(mut self, sql: &str, params: &[&dyn Param]) -> Result<u64, StorageError> {
        match statement_mode() {
            DbStatements::Prepared => {
                let statement = self.client.prepare_cached(sql).await?;
                let client = self.finish();
                with_commit(client, client.execute(&statement, &values(params))).await
            }
            DbStatements::Unnamed => {
                let client = self.finish();
                with_commit(client, client.execute_typed(sql, &typed(params))).await
            }
        }
    }

    /// `sql`, then COMMIT: the statement's row, if any.
    async fn query_opt_and_commit(mut self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, StorageError> {
        match statement_mode() {
            DbStatements::Prepared => {
                let statement = self.client.prepare_cached(sql).await?;
                let client = self.finish();
                with_commit(client, client.query_opt(&statement, &values(params))).await
            }
            DbStatements::Unnamed => {
                let client = self.finish();
                with_commit(client, client.query_typed_opt(sql, &typed(params))).await
            }
        }
    }

    /// `sql`, then COMMIT: the statement's one row.
    async fn query_one_and_commit(mut self, sql: &str, params: &[&dyn Param]) -> Result<Row, StorageError> {
        match statement_mode() {
            DbStatements::Prepared => {
                let statement = self.client.prepare_cached(sql).await?;
                let client = self.finish();
                with_commit(client, client.query_one(&statement, &values(params))).await
            }
            DbStatements::Unnamed => {
                let client = self.finish();
                with_commit(client, client.query_typed_one(sql, &typed(params))).await
            }
        }
    }

    /// The client, for the statements that end the transaction; no rollback on drop.
    fn finish(&mut self) -> &Object {
        self.open = false;
        count_statements(2);
        &self.client
    }
}

/// The last statement of a transaction, sent with the COMMIT on `client`: its answer.
async fn with_commit<T>(client: &Object, answer: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, StorageError> {
    // Polled first, the statement is sent before the COMMIT.
    let (answer, committed) = futures_util::future::join(answer, client.batch_execute("COMMIT")).await;
    // After a failed statement the COMMIT rolls back: the statement's error is the answer.
    let answer = answer?;
    committed?;
    Ok(answer)
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if self.open {
            // The first poll sends the request; its answer is not waited for, and the next
            // user of the connection is queued behind it.
            let _ = self.client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}

#[cfg(test)]
tokio::task_local! {
    /// Statements sent by the login path (BEGIN and COMMIT included), counted for the test
    /// that keeps their number down.
    static STATEMENTS: std::cell::Cell<u64>;
}

fn count_statements(sent: u64) {
    #[cfg(test)]
    let _ = STATEMENTS.try_with(|count| count.set(count.get() + sent));
    #[cfg(not(test))]
    let _ = sent;
}

tokio::task_local! {
    /// How the store whose operation runs on this task sends its statements: set around
    /// each operation (see [`PgStore::timed`]), so that the helpers below, which see only
    /// a connection or a transaction, follow `DB_STATEMENTS`.
    static STATEMENT_MODE: DbStatements;
}

/// The mode of the operation running on this task. Outside any (a mistake the debug build
/// reports), unnamed statements, which work behind any proxy.
fn statement_mode() -> DbStatements {
    let mode = STATEMENT_MODE.try_with(|mode| *mode);
    debug_assert!(mode.is_ok(), "a PostgreSQL statement ran outside a store operation");
    mode.unwrap_or(DbStatements::Unnamed)
}

/// A statement's parameter, with the PostgreSQL type an unnamed statement declares for it
/// (a prepared one learns it from the server). Each type below is the one the server
/// infers for the place the store binds it, so both modes read the same statement alike.
trait Param: ToSql + Sync {
    fn sql_type(&self) -> Type;
    fn value(&self) -> &(dyn ToSql + Sync);
}

/// The PostgreSQL type a Rust value is sent as.
trait SqlType {
    const SQL_TYPE: Type;
}

impl<T: SqlType + ToSql + Sync> Param for T {
    fn sql_type(&self) -> Type {
        T::SQL_TYPE
    }
    fn value(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

/// `Rust type => PostgreSQL type`, for the parameter types the store binds.
macro_rules! sql_types {
    ($($rust:ty => $sql:ident),* $(,)?) => {
        $(impl SqlType for $rust {
            const SQL_TYPE: Type = Type::$sql;
        })*
    };
}

sql_types!(
    bool => BOOL,
    i32 => INT4,
    i64 => INT8,
    String => TEXT,
    &str => TEXT,
    Vec<u8> => BYTEA,
    &[u8] => BYTEA,
    Vec<i32> => INT4_ARRAY,
    Vec<i64> => INT8_ARRAY,
    &[i64] => INT8_ARRAY,
    Vec<String> => TEXT_ARRAY,
    &[String] => TEXT_ARRAY,
    Vec<&str> => TEXT_ARRAY,
    Vec<Option<String>> => TEXT_ARRAY,
    Vec<&[u8]> => BYTEA_ARRAY,
);

impl<T: SqlType> SqlType for Option<T> {
    const SQL_TYPE: Type = T::SQL_TYPE;
}

impl<T: SqlType> SqlType for &T {
    const SQL_TYPE: Type = T::SQL_TYPE;
}

/// The parameters as a prepared statement takes them.
fn values<'a>(params: &[&'a dyn Param]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|param| param.value()).collect()
}

/// The parameters with their types, as an unnamed statement takes them.
fn typed<'a>(params: &[&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|param| (param.value(), param.sql_type())).collect()
}

/// A connection or a transaction on one: what a statement runs on.
trait Session: GenericClient {
    /// The driver's own client or transaction, which sends unnamed statements.
    fn driver(&self) -> &(impl tokio_postgres::GenericClient + Sync);
}

impl Session for Object {
    fn driver(&self) -> &(impl tokio_postgres::GenericClient + Sync) {
        &***self
    }
}

impl Session for deadpool_postgres::Transaction<'_> {
    fn driver(&self) -> &(impl tokio_postgres::GenericClient + Sync) {
        &**self
    }
}

// With `DB_STATEMENTS=prepared` each statement is prepared once per connection, through
// deadpool's statement cache, then bound and run in one round trip. With `unnamed` it is
// parsed, bound and run in one round trip, and nothing of it outlives it on the server.

async fn execute(client: &impl Session, sql: &str, params: &[&dyn Param]) -> Result<u64, StorageError> {
    count_statements(1);
    match statement_mode() {
        DbStatements::Prepared => {
            let statement = client.prepare_cached(sql).await?;
            Ok(client.execute(&statement, &values(params)).await?)
        }
        DbStatements::Unnamed => Ok(client.driver().execute_typed(sql, &typed(params)).await?),
    }
}

async fn query(client: &impl Session, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, StorageError> {
    count_statements(1);
    match statement_mode() {
        DbStatements::Prepared => {
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query(&statement, &values(params)).await?)
        }
        DbStatements::Unnamed => Ok(client.driver().query_typed(sql, &typed(params)).await?),
    }
}

async fn query_one(client: &impl Session, sql: &str, params: &[&dyn Param]) -> Result<Row, StorageError> {
    count_statements(1);
    match statement_mode() {
        DbStatements::Prepared => {
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query_one(&statement, &values(params)).await?)
        }
        DbStatements::Unnamed => Ok(client.driver().query_typed_one(sql, &typed(params)).await?),
    }
}

async fn query_opt(client: &impl Session, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, StorageError> {
    count_statements(1);
    match statement_mode() {
        DbStatements::Prepared => {
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query_opt(&statement, &values(params)).await?)
        }
        DbStatements::Unnamed => Ok(client.driver().query_typed_opt(sql, &typed(params)).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::pool::{host_name, single_hosts, CertificateCheck};
    use super::*;
    use crate::domain::account::{Evicted, ProfileChange};
    use crate::domain::guesses::VerifyOutcome;
    use crate::domain::keys::MessageSeal;
    use crate::domain::keys::ServerKeys;
    use crate::domain::otp;
    use crate::domain::ratelimit::{Admission, Refusal};
    use crate::store::records::{seal_message, AttemptOutcome, CodeGuess, CompletedLogin, Enqueued, NewChallenge, SyncQuery, BATCH};
    use std::collections::HashSet;
    use std::future::Future;
    use std::sync::Arc;

    /// The server these tests create their databases on (as for the integration suite).
    const SERVER_VARIABLE: &str = "DATABASE_URL";

    /// Runs `test` against the URL of a database of its own, created on the server named by
    /// `DATABASE_URL` and dropped afterwards, even when the test fails.
    async fn with_database<F, Fut>(test_name: &str, test: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(server) = std::env::var(SERVER_VARIABLE) else {
            println!("skipped {test_name}: set {SERVER_VARIABLE} to a PostgreSQL URL to run it");
            return;
        };
        let name = format!("otpgate_unit_{:016x}", rand::random::<u64>());
        let admin = PgStore::open(&database_url(&server, server_database(&server)), PgSettings::with_pool_size(1)).unwrap();
        admin.client().await.unwrap().batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let outcome = tokio::spawn(test(database_url(&server, &name))).await;
        admin.client().await.unwrap().batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
        if let Err(failed) = outcome {
            std::panic::resume_unwind(failed.into_panic());
        }
    }

    /// `server` with its database name replaced by `name`.
    fn database_url(server: &str, name: &str) -> String {
        let (base, options) = server.split_once('?').map_or((server, None), |(base, options)| (base, Some(options)));
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
        let url = format!("{}/{name}", &base[..path_start]);
        options.map_or(url.clone(), |options| format!("{url}?{options}"))
    }

    #[test]
    fn tls_options_follow_libpq() {
        assert_eq!(driver_url("postgres://h/db"), ("postgres://h/db".into(), CertificateCheck::None));
        assert_eq!(driver_url("postgres://h/db?sslmode=require"), ("postgres://h/db?sslmode=require".into(), CertificateCheck::None));
        assert_eq!(
            driver_url("postgres://h/db?sslmode=verify-full&application_name=x"),
            ("postgres://h/db?sslmode=require&application_name=x".into(), CertificateCheck::Verify { root_file: None })
        );
        assert_eq!(
            driver_url("postgres://h/db?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca"),
            ("postgres://h/db?sslmode=require".into(), CertificateCheck::Verify { root_file: Some("/etc/ca.pem".into()) })
        );
        assert_eq!(
            driver_url("postgres:///db?host=h1,h2&port=1,2"),
            ("postgres:///db?host=h1&host=h2&port=1,2".into(), CertificateCheck::None)
        );
    }

    #[test]
    fn each_host_keeps_every_other_setting_of_the_url() {
        let options = "application_name=x&sslmode=require&connect_timeout=3&keepalives_idle=30&target_session_attrs=read-write";
        let parse = |url: &str| tokio_postgres::Config::from_str(&driver_url(url).0).unwrap();
        let one = parse(&format!("postgres://u:pw@h1:5433/db?{options}"));
        assert_eq!(single_hosts(&one), vec![one.clone()]);
        let many = parse(&format!("postgres://u:pw@h1:5433,h2,[::1]:5435/db?{options}"));
        let expected: Vec<_> =
            ["h1:5433", "h2:5432", "[::1]:5435"].iter().map(|host| parse(&format!("postgres://u:pw@{host}/db?{options}"))).collect();
        assert_eq!(single_hosts(&many), expected);
        // libpq's other form: the hosts and their ports as parameters, one port for all.
        let listed = parse("postgres:///db?host=h1,h2&port=5433&user=u&target_session_attrs=read-write");
        let expected: Vec<_> =
            ["h1", "h2"].iter().map(|host| parse(&format!("postgres://u@{host}:5433/db?target_session_attrs=read-write"))).collect();
        assert_eq!(single_hosts(&listed), expected);
        assert_eq!(host_name(&expected[1]), "h2:5433");
    }

    #[test]
    fn urls_are_checked_by_the_drivers_parser() {
        check_url("postgres://u:pw@h1:5432,h2:5432/db?target_session_attrs=read-write").unwrap();
        check_url("postgres:///db?host=h1,h2&port=5432,5433").unwrap();
        check_url("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem").unwrap();
        let refused = check_url("postgres://u:secret-pw@h1/db?target_session_attrs=primary").unwrap_err();
        assert!(refused.contains("target_session_attrs"), "{refused}");
        assert!(!refused.contains("secret-pw"), "{refused}");
        assert!(check_url("postgres://h1:5432,h2:5432,h3/db?port=1,2").is_err(), "two lists of ports");
    }

    async fn backend_pid(client: &Object) -> i32 {
        client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
    }

    /// `server`'s user, password and database, reached through `hosts` instead.
    fn through_hosts(server: &str, hosts: &str) -> String {
        let config = tokio_postgres::Config::from_str(server).unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let password = config.get_password().map(|p| format!(":{}", String::from_utf8_lossy(p))).unwrap_or_default();
        format!("postgres://{user}{password}@{hosts}/{}?sslmode=disable", config.get_dbname().unwrap_or("postgres"))
    }

    /// The `host:port` of the server at `server`.
    fn host_port(server: &str) -> String {
        host_name(&tokio_postgres::Config::from_str(server).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_that_accepts_and_never_answers_is_passed_over() {
        with_database("a_host_that_accepts_and_never_answers_is_passed_over", |url| async move {
            // The kernel completes the TCP handshake of a listener nobody accepts on, as it
            // does for a frozen server's; the startup is never answered.
            let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let frozen_port = frozen.local_addr().unwrap().port();
            let hosts = format!("127.0.0.1:{frozen_port},{}", host_port(&url));
            let settings = PgSettings { connect_timeout: Duration::from_millis(300), ..PgSettings::with_pool_size(2) };
            let store = PgStore::connect(&through_hosts(&url, &hosts), settings, &phones()).await.unwrap();
            store.probe_write().await.unwrap();

            // The frozen host alone: refused once its time is up, and said so.
            let store = PgStore::open(&through_hosts(&url, &format!("127.0.0.1:{frozen_port}")), settings).unwrap();
            let refused = store.probe_write().await.unwrap_err().to_string();
            assert!(refused.contains("timeout waiting for server"), "{refused}");
            drop(frozen);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_to_a_read_only_server_is_replaced_and_the_operation_runs_again() {
        with_database("a_connection_to_a_read_only_server_is_replaced_and_the_operation_runs_again", |url| async move {
            let store = PgStore::connect(&url, PgSettings::with_pool_size(1), &phones()).await.unwrap();
            // What a primary demoted under an open connection answers: every write refused.
            let client = store.client().await.unwrap();
            client.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").await.unwrap();
            let demoted = backend_pid(&client).await;
            drop(client);
            store.probe_write().await.expect("run again on a fresh connection");
            let client = store.client().await.unwrap();
            assert_ne!(backend_pid(&client).await, demoted, "the read-only connection was dropped");
            drop(client);

            // A server that refuses writes on every connection (a standby): the server's
            // own message comes through, with what to do about it.
            let name = server_database(&url).to_string();
            let client = store.client().await.unwrap();
            client.batch_execute(&format!("ALTER DATABASE {name} SET default_transaction_read_only = on")).await.unwrap();
            drop(client);
            store.pool.retain(|_, _| false);
            let refused = store.probe_write().await.unwrap_err().to_string();
            assert!(refused.starts_with("db error: ERROR: cannot execute INSERT in a read-only transaction"), "{refused}");
            assert!(refused.contains("target_session_attrs=read-write"), "{refused}");
        })
        .await;
    }

    /// A server that stops taking writes (a primary being demoted before its standby is
    /// promoted): a claimed code is given back once writes come back, within the query
    /// timeout, not refused after the one retry every operation gets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_code_is_given_back_once_the_server_takes_writes_again() {
        with_database("a_code_is_given_back_once_the_server_takes_writes_again", |url| async move {
            let settings = PgSettings { query_timeout: Duration::from_secs(60), ..PgSettings::with_pool_size(2) };
            let store = Arc::new(PgStore::connect(&url, settings, &phones()).await.unwrap());
            let now = now();
            let (_, otp_hash) = start(&store, "18005550001", "123456", now).await;
            let claimed = store.claim_code(guess("18005550001", otp_hash), now, 5, 60, guess_admitted).await.unwrap();
            assert_eq!(claimed, VerifyOutcome::Claimed { link_target: None });

            // Opened before, this session still writes.
            let admin = PgStore::open(&url, PgSettings::with_pool_size(1)).unwrap();
            let admin = admin.client().await.unwrap();
            let name = server_database(&url).to_string();
            admin.batch_execute(&format!("ALTER DATABASE {name} SET default_transaction_read_only = on")).await.unwrap();
            store.pool.retain(|_, _| false);
            let refusals = || async {
                let sql = "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()";
                admin.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
            };
            let before = refusals().await;
            let release = tokio::spawn({
                let store = Arc::clone(&store);
                async move { store.release_code("18005550001".into(), otp_hash).await }
            });
            let mut waited = 0;
            while refusals().await < before + 3 && !release.is_finished() && waited < 1200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += 1;
            }
            assert!(!release.is_finished(), "gave up while no host takes writes: {:?}", release.await.unwrap());
            assert!(refusals().await >= before + 3, "the server never refused the code's release");

            admin.batch_execute(&format!("ALTER DATABASE {name} RESET default_transaction_read_only")).await.unwrap();
            release.await.unwrap().expect("given back once the server takes writes");
            let claimed = store.claim_code(guess("18005550001", otp_hash), now, 5, 60, guess_admitted).await.unwrap();
            assert_eq!(claimed, VerifyOutcome::Claimed { link_target: None }, "the code works again");
        })
        .await;
    }

    /// The database named in `server`, where the test databases are created from.
    fn server_database(server: &str) -> &str {
        let base = server.split('?').next().unwrap_or(server);
        let path = &base[base.find("://").map_or(0, |i| i + 3)..];
        path.split_once('/').map(|(_, name)| name).filter(|name| !name.is_empty()).unwrap_or("postgres")
    }

    fn admitted() -> Admission<Refusal> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn guess_admitted(_bound: bool, _attempts: u32) -> Admission<Refusal> {
        admitted()
    }

    fn seal() -> MessageSeal {
        ServerKeys::from_secret(b"postgres store tests").seal
    }

    fn phones() -> PhoneHasher {
        ServerKeys::from_secret(b"postgres store tests").phones
    }

    /// A code for `address`, created at `now`, queued with its sealed message and due at once.
    async fn start(store: &PgStore, address: &str, code: &str, now: i64) -> (i64, [u8; 32]) {
        let otp_hash = otp::OtpHasher::new(b"k").hash(address, code);
        let challenge = NewChallenge {
            address: address.to_string(),
            appid: "app".into(),
            otp_hash,
            challenge_sha256: otp::challenge_sha256("id"),
            now,
            ttl_secs: 600,
            resend_secs: 60,
        };
        let sealed = seal_message(&seal(), address, code, &format!("your code is {code}"), &otp_hash);
        match store.enqueue_message(challenge, (address.to_string(), "app".into(), sealed, None), now * 1000, admitted).await.unwrap() {
            Enqueued::Stored(id) => (id, otp_hash),
            _ => panic!("the code was not stored"),
        }
    }

    fn guess(address: &str, otp_hash: [u8; 32]) -> CodeGuess {
        CodeGuess { address: address.into(), appid: "app".into(), otp_hash, challenge_sha256: None }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_instances_apply_each_migration_once() {
        with_database("racing_instances_apply_each_migration_once", |url| async move {
            let (first, second) = (url.clone(), url.clone());
            let first = tokio::spawn(async move { PgStore::connect(&first, PgSettings::with_pool_size(2), &phones()).await });
            let second = tokio::spawn(async move { PgStore::connect(&second, PgSettings::with_pool_size(2), &phones()).await });
            let store = first.await.unwrap().unwrap();
            second.await.unwrap().unwrap();
            assert_eq!(store.migrate(&phones()).await.unwrap(), Vec::<u32>::new(), "nothing is left to apply");
            let client = store.client().await.unwrap();
            let recorded: i64 = client.query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0);
            assert_eq!(recorded, MIGRATIONS.len() as i64);

            // Two pools on a database without schema: each step is applied by exactly one.
            client.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public").await.unwrap();
            let (a, b) =
                (PgStore::open(&url, PgSettings::with_pool_size(2)).unwrap(), PgStore::open(&url, PgSettings::with_pool_size(2)).unwrap());
            let phones = phones();
            let (a, b) = tokio::join!(a.migrate(&phones), b.migrate(&phones));
            let mut applied = [a.unwrap(), b.unwrap()].concat();
            applied.sort_unstable();
            assert_eq!(applied, MIGRATIONS.iter().map(|(version, _, _)| *version).collect::<Vec<_>>());
        })
        .await;
    }

    /// Each step's file is `NNN_name.sql`, by its number and name, and no other file is there.
    #[test]
    fn each_step_is_the_file_of_its_number_and_name() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort_unstable();
        let named: Vec<String> = MIGRATIONS.iter().map(|(version, name, _)| format!("{version:03}_{name}.sql")).collect();
        assert_eq!(files, named);
        for ((_, _, sql), file) in MIGRATIONS.iter().zip(&named) {
            assert_eq!(*sql, std::fs::read_to_string(dir.join(file)).unwrap(), "{file}");
        }
        for (earlier, now) in EARLIER_NUMBERING {
            assert!(now.iter().all(|step| !step_name(*step).is_empty()), "{earlier} is renumbered to steps that exist");
        }
        let renumbered: HashSet<u32> = EARLIER_NUMBERING.iter().flat_map(|(_, now)| now.iter().copied()).collect();
        assert_eq!(renumbered.len(), EARLIER_NUMBERING.iter().map(|(_, now)| now.len()).sum::<usize>(), "no step twice");
    }

    /// A database migrated by a release that numbered the steps its own way: what it applied
    /// is recorded under the steps' numbers now, when it was applied kept, and never runs again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steps_an_earlier_release_numbered_are_renumbered_not_run_again() {
        with_database("steps_an_earlier_release_numbered_are_renumbered_not_run_again", |url| async move {
            let store = PgStore::open(&url, PgSettings::with_pool_size(2)).unwrap();
            let client = store.client().await.unwrap();
            let record_earlier = |steps: &'static [(&'static str, &'static [u32])]| {
                let client = &client;
                async move {
                    client
                        .batch_execute(
                            "DROP TABLE IF EXISTS schema_migrations;
                             CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                        )
                        .await
                        .unwrap();
                    for (number, (name, _)) in (1..).zip(steps) {
                        client
                            .execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)", &[&number, name, &(1000 + i64::from(number))])
                            .await
                            .unwrap();
                    }
                }
            };
            let recorded = || async {
                let rows = client.query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version", &[]).await.unwrap();
                rows.iter().map(|r| (counter(r.get(0)), r.get::<_, String>(1), r.get::<_, i64>(2))).collect::<Vec<_>>()
            };

            // A release whose last step was its third, `groups`: steps 1 to 5 now.
            for (_, _, sql) in MIGRATIONS.iter().filter(|(version, _, _)| *version <= 5) {
                client.batch_execute(sql).await.unwrap();
            }
            record_earlier(&EARLIER_NUMBERING[..3]).await;
            let later: Vec<u32> = MIGRATIONS.iter().map(|(version, _, _)| *version).filter(|version| *version > 5).collect();
            assert_eq!(store.migrate(&phones()).await.unwrap(), later, "only the steps it lacked run");
            let steps = recorded().await;
            assert_eq!(steps.iter().map(|(version, name, _)| (*version, name.clone())).collect::<Vec<_>>(), migration_steps());
            let applied_at: Vec<i64> = steps.iter().take(5).map(|(_, _, at)| *at).collect();
            assert_eq!(applied_at, [1001, 1001, 1001, 1002, 1003], "when each was applied is kept");

            // A release that applied all of its ten: only the steps added since run.
            record_earlier(EARLIER_NUMBERING).await;
            let since: Vec<u32> = MIGRATIONS.iter().map(|(version, _, _)| *version).filter(|version| *version > 12).collect();
            assert_eq!(store.migrate(&phones()).await.unwrap(), since);
            let steps = recorded().await;
            assert_eq!(steps.iter().map(|(version, name, _)| (*version, name.clone())).collect::<Vec<_>>(), migration_steps());
            assert_eq!((steps[10].2, steps[11].2), (1010, 1009), "contact_counts was its tenth, login_functions its ninth");
            assert_eq!(store.migrate(&phones()).await.unwrap(), Vec::<u32>::new(), "renumbered once");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upgrade_hashes_the_address_books_kept_in_clear() {
        with_database("an_upgrade_hashes_the_address_books_kept_in_clear", |url| async move {
            let store = PgStore::open(&url, PgSettings::with_pool_size(2)).unwrap();
            let client = store.client().await.unwrap();
            // A database of the release before: its address books hold phones.
            client
                .batch_execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
                .await
                .unwrap();
            for (version, name, sql) in MIGRATIONS.iter().filter(|(version, _, _)| *version < HASHED_CONTACTS) {
                client.batch_execute(sql).await.unwrap();
                client.execute("INSERT INTO schema_migrations VALUES ($1, $2, 0)", &[&int(*version), name]).await.unwrap();
            }
            client
                .batch_execute(
                    "INSERT INTO users (address, uid, created_at, last_login, ts) VALUES ('18005550001', '1', 0, 0, 0), ('18005550002', '2', 0, 0, 0);
                     INSERT INTO contacts (owner_id, phone, added_at) VALUES (1, '18005550002', 0), (1, '18005559999', 0), (2, '18005550001', 0);",
                )
                .await
                .unwrap();
            drop(client);

            let later: Vec<u32> = MIGRATIONS.iter().map(|(version, _, _)| *version).filter(|version| *version >= HASHED_CONTACTS).collect();
            assert_eq!(store.migrate(&phones()).await.unwrap(), later);
            let client = store.client().await.unwrap();
            let rows = client.query("SELECT owner_id, phone_hash FROM contacts ORDER BY owner_id, phone_hash", &[]).await.unwrap();
            let mut stored: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            stored.sort_unstable();
            let hash = |phone: &str| phones().hash(phone);
            let mut expected = vec![(1, hash("18005550002")), (1, hash("18005559999")), (2, hash("18005550001"))];
            expected.sort_unstable();
            assert_eq!(stored, expected);
            let counts = client.query("SELECT id, contact_count FROM users ORDER BY id", &[]).await.unwrap();
            let counts: Vec<(i64, i64)> = counts.iter().map(|r| (r.get(0), r.get(1))).collect();
            assert_eq!(counts, vec![(1, 2), (2, 1)], "each user's contacts are counted");
            let text_columns: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.columns WHERE table_name LIKE 'contacts%' AND data_type = 'text'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(text_columns, 0, "no table keeps an address book's phone");
            let matched: i64 = client
                .query_one("SELECT count(*) FROM contacts c JOIN users u ON u.address_hash = c.phone_hash", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(matched, 2, "users are found by the hash of their address");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_fifty_concurrent_right_guesses_exactly_one_claims_the_code() {
        with_database("of_fifty_concurrent_right_guesses_exactly_one_claims_the_code", |url| async move {
            let store = Arc::new(PgStore::connect(&url, PgSettings::with_pool_size(8), &phones()).await.unwrap());
            let now = now();
            let (_, otp_hash) = start(&store, "18005550001", "123456", now).await;
            let guesses: Vec<_> = (0..50)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move { store.claim_code(guess("18005550001", otp_hash), now, 5, 60, guess_admitted).await.unwrap() })
                })
                .collect();
            let mut claimed = 0;
            for outcome in guesses {
                match outcome.await.unwrap() {
                    VerifyOutcome::Claimed { link_target: None } => claimed += 1,
                    other => assert_eq!(other, VerifyOutcome::NoCode, "the others find the code claimed"),
                }
            }
            assert_eq!(claimed, 1);

            // Given back, the code works again; a wrong guess and a refusal behave as in SQLite.
            store.release_code("18005550001".into(), otp_hash).await.unwrap();
            let wrong = store.claim_code(guess("18005550001", [0; 32]), now, 5, 60, guess_admitted).await.unwrap();
            assert_eq!(wrong, VerifyOutcome::Wrong { left: 4 });
            let refuse = |_, _| -> Admission<Refusal> { Box::pin(std::future::ready(Err(Refusal::Wait(7)))) };
            let refused = store.claim_code(guess("18005550001", otp_hash), now, 5, 60, refuse).await.unwrap();
            assert_eq!(refused, VerifyOutcome::Refused(Refusal::Wait(7)));
            let claimed = store.claim_code(guess("18005550001", otp_hash), now, 5, 60, guess_admitted).await.unwrap();
            assert_eq!(claimed, VerifyOutcome::Claimed { link_target: None });
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_senders_never_take_the_same_notice() {
        with_database("concurrent_senders_never_take_the_same_notice", |url| async move {
            let store = Arc::new(PgStore::connect(&url, PgSettings::with_pool_size(4), &phones()).await.unwrap());
            let now = now();
            store
                .client()
                .await
                .unwrap()
                .execute(
                    "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
                     SELECT 'r' || n, '{}', $1, $1 FROM generate_series(1, 40) n",
                    &[&now],
                )
                .await
                .unwrap();
            let senders: Vec<_> = (0..2)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        let mut taken = Vec::new();
                        while let Some(notice) = store.take_next_notice(now, 60).await.unwrap() {
                            taken.push(notice.id);
                        }
                        taken
                    })
                })
                .collect();
            let mut all = Vec::new();
            for sender in senders {
                all.extend(sender.await.unwrap());
            }
            assert_eq!(all.len(), 40);
            assert_eq!(all.iter().collect::<HashSet<_>>().len(), 40, "no notice was taken twice");
            assert!(store.take_next_notice(now, 60).await.unwrap().is_none(), "all are leased");
            let again = store.take_next_notice(now + 60, 60).await.unwrap().expect("a lease ends");
            store.reschedule_notice(again.id, 1, now, "busy".into()).await.unwrap();
            store.acknowledge_notice(again.id).await.unwrap();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_couriers_never_claim_the_same_message_and_leases_end() {
        with_database("concurrent_couriers_never_claim_the_same_message_and_leases_end", |url| async move {
            let store = Arc::new(PgStore::connect(&url, PgSettings::with_pool_size(4), &phones()).await.unwrap());
            let now = now();
            let now_ms = now * 1000;
            for n in 0..40 {
                start(&store, &format!("1800555{n:04}"), &format!("{n:06}"), now).await;
            }
            let couriers: Vec<_> = (0..2)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        let mut claimed = Vec::new();
                        loop {
                            let round = store.claim_due_messages(seal(), now_ms, now_ms + 1000).await.unwrap();
                            if round.batch.is_empty() {
                                return claimed;
                            }
                            for message in round.batch {
                                assert_eq!(message.body, format!("your code is {}", message.otp));
                                claimed.push(message.id);
                            }
                        }
                    })
                })
                .collect();
            let mut all = Vec::new();
            for courier in couriers {
                all.extend(courier.await.unwrap());
            }
            assert_eq!(all.len(), 40);
            assert_eq!(all.iter().collect::<HashSet<_>>().len(), 40, "no message was claimed twice");

            let leased = store.claim_due_messages(seal(), now_ms, now_ms + 1000).await.unwrap();
            assert!(leased.batch.is_empty());
            assert_eq!((leased.next_due, leased.queued), (Some(now_ms + 1000), 40));
            let back = store.claim_due_messages(seal(), now_ms + 1000, now_ms + 2000).await.unwrap();
            assert_eq!(back.batch.len(), BATCH, "leased rows come back once their lease ends");

            // A message another key sealed fails for good, and its code goes with it.
            let first = &back.batch[0];
            store
                .record_attempt(
                    first.id,
                    1,
                    AttemptOutcome::Sent { instance: "log".into(), message_id: None, keep_sealed: false },
                    first.address.clone(),
                    first.otp_hash.clone(),
                )
                .await
                .unwrap();
            let other_key = ServerKeys::from_secret(b"another key").seal;
            let failed = store.claim_due_messages(other_key, now_ms + 2000, now_ms + 3000).await.unwrap();
            assert!(failed.batch.is_empty());
            assert_eq!(failed.queued, 40 - 1 - BATCH as i64);
            assert_eq!(store.purge_finished_messages(now + 1).await.unwrap(), 1 + BATCH);
            let (codes, _) = store.purge_expired(now + 600).await.unwrap();
            assert_eq!(codes, 40 - BATCH, "the undecryptable messages' codes were deleted already");
        })
        .await;
    }

    /// A login start and a full login on warm connections (each statement already prepared,
    /// or sent unnamed): the statements they send, BEGIN and COMMIT included, as many in
    /// both modes; unnamed ones leave no named statement on the server's session, which a
    /// transaction-pooling proxy may hand to another client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_sends_few_statements() {
        with_database("a_login_sends_few_statements", |url| async move {
            for (mode, first) in [(DbStatements::Prepared, 1), (DbStatements::Unnamed, 3)] {
                let settings = PgSettings { statements: mode, ..PgSettings::with_pool_size(1) };
                let store = PgStore::connect(&url, settings, &phones()).await.unwrap();
                let (start, full) = login_statements(&store, first).await;
                // BEGIN with the lock and read, the writes with COMMIT; the delivery's record.
                assert_eq!(start, 5, "statements of a login start ({mode:?})");
                // BEGIN with the locked read, the claim and the link lookup with COMMIT; the record.
                assert_eq!(full - start, 5, "statements of a verify ({mode:?})");
                let token = format!("t{}", first + 1);
                assert!(store.authenticate(token, now() * 1000).await.unwrap().is_some());
                let client = store.client().await.unwrap();
                let named = client.simple_query("SELECT count(*) FROM pg_prepared_statements").await.unwrap();
                let named = named.iter().find_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(String::from),
                    _ => None,
                });
                match mode {
                    DbStatements::Prepared => assert_ne!(named.as_deref(), Some("0"), "prepared statements are named on the server"),
                    DbStatements::Unnamed => assert_eq!(named.as_deref(), Some("0"), "unnamed statements leave nothing named"),
                }
            }
        })
        .await;
    }

    /// Two full logins on `store` (phones and tokens numbered from `first`), the first to
    /// warm the pool's connection: the statements of the second's start, and of all of it.
    async fn login_statements(store: &PgStore, first: u32) -> (u64, u64) {
        let now = now();
        let full_login = |n: u32| async move {
            let address = format!("1800555{n:04}");
            let (id, otp_hash) = start(store, &address, "123456", now).await;
            store
                .record_attempt(
                    id,
                    1,
                    AttemptOutcome::Sent { instance: "log".into(), message_id: None, keep_sealed: false },
                    address.clone(),
                    otp_hash.to_vec(),
                )
                .await
                .unwrap();
            let started = STATEMENTS.with(|count| count.get());
            let claimed = store.claim_code(guess(&address, otp_hash), now, 5, 60, guess_admitted).await.unwrap();
            assert_eq!(claimed, VerifyOutcome::Claimed { link_target: None });
            let login = CompletedLogin {
                address: address.clone(),
                uid: "u1".into(),
                name: "Ann".into(),
                token_sha256: format!("t{n}"),
                now,
                appid: "app".into(),
                device: "d1".into(),
                now_ms: now * 1000,
                expires_at: now + 3600,
                max_devices: 1,
            };
            assert!(store.record_login(login, phones().hash(&address), Some(otp_hash)).await.unwrap().first_login);
            (started, STATEMENTS.with(|count| count.get()))
        };
        // The first login prepares the statements on the pool's one connection.
        STATEMENTS.scope(std::cell::Cell::new(0), full_login(first)).await;
        STATEMENTS.scope(std::cell::Cell::new(0), full_login(first + 1)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_login_authenticates_and_notifies_contacts() {
        with_database("a_recorded_login_authenticates_and_notifies_contacts", |url| async move {
            let store = PgStore::connect(&url, PgSettings::with_pool_size(2), &phones()).await.unwrap();
            let now = now();
            let login = |address: &str, token: &str, device: &str| CompletedLogin {
                address: address.into(),
                uid: "u1".into(),
                name: "Ann".into(),
                token_sha256: token.into(),
                now,
                appid: "app".into(),
                device: device.into(),
                now_ms: now * 1000,
                expires_at: now + 3600,
                max_devices: 1,
            };
            let (_, otp_hash) = start(&store, "18005550001", "123456", now).await;
            let record = store.record_login(login("18005550001", "t1", "d1"), phones().hash("18005550001"), Some(otp_hash)).await.unwrap();
            assert!(record.first_login);
            assert_eq!(record.profile.name, "Ann");
            let caller = store.authenticate("t1".into(), now * 1000 + 5).await.unwrap().expect("the session is live");
            assert!(store.authenticate("t1".into(), (now + 3600) * 1000).await.unwrap().is_none(), "expired");
            assert_eq!(store.sessions_of(caller.clone(), now).await.unwrap().len(), 1);
            assert_eq!(store.profile_of(caller.user_id).await.unwrap().address, "18005550001");

            // Ann uploads Bob's phone; Bob's first login notifies her.
            let query =
                SyncQuery { owner: caller.user_id, phones: Some(vec!["18005550002".into()]), since: 0, reset: false, after: None, now };
            let admit = |new: usize, after: usize| -> Admission<Refusal> {
                assert_eq!((new, after), (1, 1));
                Box::pin(std::future::ready(Ok(())))
            };
            assert_eq!(store.sync_contacts(query, vec![phones().hash("18005550002")], admit).await.unwrap().unwrap(), (vec![], false));
            let (_, bob_hash) = start(&store, "18005550002", "654321", now).await;
            let bob = store.record_login(login("18005550002", "t2", ""), phones().hash("18005550002"), Some(bob_hash)).await.unwrap();
            assert_eq!(bob.notified, 1);
            let query = SyncQuery { owner: caller.user_id, phones: None, since: 0, reset: false, after: None, now };
            let no_upload = |_: usize, _: usize| -> Admission<Refusal> { panic!("nothing was uploaded") };
            let (page, more) = store.sync_contacts(query, vec![], no_upload).await.unwrap().unwrap();
            assert_eq!((page.len(), page[0].address.as_str(), more), (1, "18005550002", false));
            assert_eq!(store.take_next_notice(now, 60).await.unwrap().expect("a joined notice").recipient, "18005550001");

            // A second device of Ann with room for one evicts the first.
            let (_, otp_hash) = start(&store, "18005550001", "111111", now + 60).await;
            let again = store.record_login(login("18005550001", "t3", "d2"), phones().hash("18005550001"), Some(otp_hash)).await.unwrap();
            assert!(!again.first_login);
            assert_eq!(again.evicted, vec![Evicted { appid: "app".into(), device: "d1".into() }]);
            assert!(store.authenticate("t1".into(), now * 1000).await.unwrap().is_none());
            let change = ProfileChange { status: Some("here".into()), ..ProfileChange::default() };
            assert_eq!(store.change_profile(caller.user_id, change, now + 1).await.unwrap().profile.status, "here");
            assert_eq!(store.remove_contacts(caller.user_id, vec![phones().hash("18005550002")]).await.unwrap(), 1);
            assert_eq!(store.end_sessions("t3".into(), true).await.unwrap(), 1);
            store.probe_write().await.unwrap();
            store.probe_write().await.unwrap();
        })
        .await;
    }
}
