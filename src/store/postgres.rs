//! PostgreSQL storage, for several instances on one database.
//!
//! The same queries as the SQLite store, made safe for concurrent writers: what SQLite
//! gets from its single writer, this gets from row locks (`FOR UPDATE`), `SKIP LOCKED`
//! for work queues and purges, and transaction-scoped advisory locks.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};
use tokio_postgres::config::{Host, LoadBalanceHosts};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::domain::account::{Caller, Evicted, OwnProfile, Profile, ProfileChange, PushRegistration};
use crate::domain::address::Address;
use crate::domain::error::ApiError;
use crate::domain::groups::{Group, GroupWrite, MemberChange, MEMBER, OWNER};
use crate::domain::guesses::{after_wrong_guess, judge, Challenge, Guess, Judgement, VerifyOutcome};
use crate::domain::keys::{MessageSeal, PhoneHasher};
use crate::domain::notices::NoticeBody;
use crate::domain::otp;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::accounts::DeletedAccount;
use crate::store::audit::{self, MAX_EVENTS};
use crate::store::contacts::{SyncQuery, PAGE_SIZE};
use crate::store::courier::{self, AttemptOutcome, Claimed, Enqueued, QueuedMessage, BATCH};
use crate::store::files;
use crate::store::import::{Imported, PushRow, SessionRow, Snapshot, UserRow};
use crate::store::links::{LinkOutcome, LinkedAddress};
use crate::store::operators::{session_entry, UserKey, UserRecord, SESSION_ID_CHARS};
use crate::store::outbox::userdel_payload;
use crate::store::outbox::Pending;
use crate::store::outbox::USERDEL;
use crate::store::{CodeGuess, CompletedLogin, LoginRecord, NewChallenge, StorageError};

/// The schema steps, in order: (version, name, SQL). Append new steps; never edit an applied one.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/001_initial.sql")),
    (2, "photos_and_push", include_str!("../../migrations/postgres/002_photos_and_push.sql")),
    (3, "groups", include_str!("../../migrations/postgres/003_groups.sql")),
    (4, "hashed_contacts", include_str!("../../migrations/postgres/004_hashed_contacts.sql")),
    (5, "account_deletion", include_str!("../../migrations/postgres/005_account_deletion.sql")),
    (6, "audit_events", include_str!("../../migrations/postgres/006_audit_events.sql")),
    (7, "linked_addresses", include_str!("../../migrations/postgres/007_linked_addresses.sql")),
    (8, "file_references", include_str!("../../migrations/postgres/008_file_references.sql")),
    (9, "login_functions", include_str!("../../migrations/postgres/009_login_functions.sql")),
    (10, "contact_counts", include_str!("../../migrations/postgres/010_contact_counts.sql")),
];

/// The step whose file leaves the phones of address books for the service to hash.
const HASHED_CONTACTS: u32 = 4;
/// Rows hashed per round trip when address books are moved to hashes.
const REHASH_BATCH: i64 = 10_000;

/// Key of the advisory lock that migrations take, so that instances starting together
/// apply each step once.
const MIGRATION_LOCK: i64 = 0x6f74_7067_6174_6501;

/// Longest a request waits for a pooled connection: with every connection busy, requests
/// fail instead of piling up. Opening one is bounded per host (see [`PgSettings::connect_timeout`]).
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause between two tries to record a login while no host takes writes.
const LOGIN_RETRY_PAUSE: Duration = Duration::from_millis(200);

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
}

impl PgSettings {
    /// Defaults for tests and tools: those of `DB_CONNECT_TIMEOUT_MS` and `DB_QUERY_TIMEOUT_MS`.
    pub fn with_pool_size(pool_size: usize) -> PgSettings {
        PgSettings { pool_size, connect_timeout: Duration::from_secs(5), query_timeout: Duration::from_secs(10) }
    }
}

/// A pool of connections to one PostgreSQL database, which other instances may share.
pub struct PgStore {
    pool: Pool,
    query_timeout: Duration,
}

/// Checks a `DATABASE_URL` the way the pool will read it, without connecting: the driver's
/// own parser, which knows libpq's URL forms (several `host:port` before the path, or
/// `?host=h1,h2&port=p1,p2`) and options such as `target_session_attrs`.
pub fn check_url(url: &str) -> Result<(), String> {
    let (url, _) = driver_url(url);
    let config = tokio_postgres::Config::from_str(&url).map_err(|e| with_causes(&e))?;
    let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
    if hosts == 0 {
        return Err("names no host".into());
    }
    let ports = config.get_ports().len();
    if ports > 1 && ports != hosts {
        return Err(format!("names {hosts} hosts but {ports} ports: give one port for all, or one per host"));
    }
    Ok(())
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
        check_url(url).map_err(|why| StorageError::Thread(format!("DATABASE_URL {why}")))?;
        let (url, check) = driver_url(url);
        let config = tokio_postgres::Config::from_str(&url)?;
        let connect = HostByHost { tls: tls(&check)?, timeout: settings.connect_timeout, last_good: AtomicUsize::new(0) };
        let manager = Manager::from_connect(config, connect, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            // Each host's attempt is bounded by `connect_timeout`: a bound on the whole
            // would cut off the later hosts behind a frozen first one.
            .create_timeout(None)
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StorageError::Pool(e.to_string()))?;
        Ok(PgStore { pool, query_timeout: settings.query_timeout })
    }

    /// Closes the pool at shutdown: idle connections end, and later calls fail at once.
    pub fn close(&self) {
        self.pool.close();
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, StorageError> {
        let started = Instant::now();
        let client = self.pool.get().await.map_err(|e| StorageError::Pool(with_causes(&e)))?;
        crate::domain::metrics::DB_POOL_WAIT.observe(started.elapsed().as_secs_f64());
        Ok(client)
    }

    /// Applies the migrations this database lacks; returns their versions. Each runs in a
    /// transaction of its own under an advisory lock, and checks again under the lock
    /// that no other instance applied it meanwhile. `phones` hashes address books.
    pub async fn migrate(&self, phones: &PhoneHasher) -> Result<Vec<u32>, StorageError> {
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
            execute(&tx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", &[&number, &name, &super::now()])
                .await?;
            tx.commit().await?;
            done.push(version);
        }
        Ok(done)
    }

    /// Deletes the codes and sessions that expired before `now`; returns how many of each.
    /// Rows another transaction holds are left for the next round, so purges running on
    /// every instance never wait for each other or for a login.
    pub async fn purge_expired(&self, now: i64) -> Result<(usize, usize), StorageError> {
        self.retrying(Retry::Always, |client| self.purge_expired_once(client, now)).await
    }

    async fn purge_expired_once(&self, client: Object, now: i64) -> Result<(usize, usize), StorageError> {
        let codes = execute(
            &client,
            "DELETE FROM otp_challenges WHERE address IN
                 (SELECT address FROM otp_challenges WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)",
            &[&now],
        )
        .await?;
        let sessions = execute(
            &client,
            "DELETE FROM sessions WHERE token_sha256 IN
                 (SELECT token_sha256 FROM sessions WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)",
            &[&now],
        )
        .await?;
        Ok((rows(codes), rows(sessions)))
    }

    /// A real write, so readiness fails when the database is read-only or unreachable.
    pub async fn probe_write(&self) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| self.probe_write_once(client)).await
    }

    async fn probe_write_once(&self, client: Object) -> Result<(), StorageError> {
        let value = super::now().to_le_bytes();
        execute(
            &client,
            "INSERT INTO settings (key, value) VALUES ('readyz_probe', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&&value[..]],
        )
        .await?;
        Ok(())
    }

    /// Checks a guess at a pending code and claims the code when it is right, like
    /// [`check_and_claim`](crate::store::check_and_claim). The challenge row stays locked
    /// from the read to the commit, so of concurrent right guesses exactly one claims it.
    pub async fn claim_code(
        &self,
        guess: CodeGuess,
        now: i64,
        max_attempts: u32,
        claim_secs: i64,
        admit: impl FnOnce() -> Admission<Refusal> + Send + 'static,
    ) -> Result<VerifyOutcome, StorageError> {
        // Returning without a commit rolls the transaction back, which releases the row.
        let (tx, row) = self
            .begin_retrying(
                "SELECT appid, otp_hash, expires_at, attempts, claimed_at, challenge_sha256, bound_attempts
                 FROM otp_challenges WHERE address = $1 FOR UPDATE",
                &[&guess.address],
            )
            .await?;
        let challenge = match row {
            Some(row) => Some(Challenge {
                appid: row.try_get(0)?,
                otp_hash: row.try_get(1)?,
                expires_at: row.try_get(2)?,
                attempts: counter(row.try_get(3)?),
                claimed_at: row.try_get(4)?,
                challenge_sha256: row.try_get(5)?,
                bound_attempts: counter(row.try_get(6)?),
            }),
            None => None,
        };
        let judged =
            Guess { address: &guess.address, appid: &guess.appid, otp_hash: &guess.otp_hash, challenge_sha256: guess.challenge_sha256 };
        let (bound, attempts) = match judge(challenge.as_ref(), &judged, now, max_attempts, claim_secs) {
            Judgement::Answer(outcome) => return Ok(outcome),
            Judgement::Compare { bound, attempts } => (bound, attempts),
        };
        if !bound {
            if let Err(refusal) = admit().await {
                return Ok(VerifyOutcome::Refused(refusal));
            }
        }
        // Not run again when interrupted: the claim may have been committed. A code is
        // never accepted twice; at worst it is held until its claim times out.
        if challenge.as_ref().is_some_and(|challenge| otp::same(&challenge.otp_hash, &guess.otp_hash)) {
            // The claim and the link lookup the login needs next, in one statement.
            let claim = "WITH claimed AS (UPDATE otp_challenges SET claimed_at = $2 WHERE address = $1)
                 SELECT u.address FROM linked_addresses l JOIN users u ON u.id = l.user_id WHERE l.address = $1";
            let linked = self.timed(tx.query_opt_and_commit(claim, &[&guess.address, &now])).await?;
            let link_target = linked.map(|row| row.try_get(0)).transpose()?;
            return Ok(VerifyOutcome::Claimed { link_target });
        }
        let count_it = if bound {
            "UPDATE otp_challenges SET bound_attempts = bound_attempts + 1 WHERE address = $1"
        } else {
            "UPDATE otp_challenges SET attempts = attempts + 1 WHERE address = $1"
        };
        self.timed(tx.execute_and_commit(count_it, &[&guess.address])).await?;
        Ok(after_wrong_guess(max_attempts, attempts))
    }

    /// Gives a claimed code back after the upstream call failed, so the same code works
    /// again; a newer code for the address stays as it is.
    pub async fn release_code(&self, address: String, otp_hash: [u8; 32]) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| self.release_code_once(client, address.clone(), otp_hash)).await
    }

    async fn release_code_once(&self, client: Object, address: String, otp_hash: [u8; 32]) -> Result<(), StorageError> {
        let hash: &[u8] = &otp_hash;
        execute(&client, "UPDATE otp_challenges SET claimed_at = NULL WHERE address = $1 AND otp_hash = $2", &[&address, &hash]).await?;
        Ok(())
    }

    /// Records the user and the session, queues joined notices for a first phone login,
    /// and consumes the challenge, all in one statement (`otpgate_record_login`, the same
    /// steps as `complete_login`), hence one transaction. The user's row stays locked until
    /// it ends, so logins of one user run one at a time.
    pub async fn record_login(
        &self,
        login: CompletedLogin,
        address_hash: i64,
        claimed_code: Option<[u8; 32]>,
    ) -> Result<LoginRecord, StorageError> {
        // Upstream has issued the token already: unrecorded, it is lost and the user starts
        // over. Through a failover the login is tried again, on fresh connections, for up to
        // the query timeout after the first failure, long enough for a standby to take over.
        // Running it twice is safe: the session is keyed by its token, a first login is one
        // only once, and the code is consumed once (only the audit event may be written twice).
        let attempt = |client| self.record_login_once(client, login.clone(), address_hash, claimed_code);
        let mut failed = match self.guarded(attempt).await {
            Err(e) if interrupted(&e).is_some() => e,
            outcome => return outcome,
        };
        let deadline = Instant::now() + self.query_timeout;
        loop {
            tracing::info!("recording the login again on a fresh PostgreSQL connection after: {failed}");
            match self.guarded(attempt).await {
                Err(e) if (interrupted(&e).is_some() || matches!(e, StorageError::Pool(_))) && Instant::now() < deadline => failed = e,
                outcome => return outcome,
            }
            // Until a standby is promoted every host refuses; each try costs a connection attempt per host.
            tokio::time::sleep(LOGIN_RETRY_PAUSE).await;
        }
    }

    async fn record_login_once(
        &self,
        client: Object,
        login: CompletedLogin,
        address_hash: i64,
        claimed_code: Option<[u8; 32]>,
    ) -> Result<LoginRecord, StorageError> {
        let joined = crate::domain::address::is_phone(&login.address)
            .then(|| crate::store::outbox::contact_joined(&login.address, &login.name, login.now).payload());
        let max_devices = i64::try_from(login.max_devices).unwrap_or(i64::MAX);
        let consumed: Option<&[u8]> = claimed_code.as_ref().map(|hash| &hash[..]);
        let row = query_one(
            &client,
            "SELECT * FROM otpgate_record_login($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &login.address,
                &login.uid,
                &login.name,
                &login.now,
                &address_hash,
                &joined,
                &login.token_sha256,
                &login.appid,
                &login.device,
                &login.now_ms,
                &login.expires_at,
                &max_devices,
                &consumed,
                &audit::LOGIN,
            ],
        )
        .await?;
        let profile = OwnProfile { name: row.try_get(2)?, status: row.try_get(3)?, photo: row.try_get(4)?, thumbnail: row.try_get(5)? };
        let (appids, devices): (Vec<String>, Vec<String>) = (row.try_get(7)?, row.try_get(8)?);
        Ok(LoginRecord {
            first_login: row.try_get(1)?,
            notified: rows(u64::try_from(row.try_get::<_, i64>(6)?).unwrap_or(0)),
            evicted: appids.into_iter().zip(devices).map(|(appid, device)| Evicted { appid, device }).collect(),
            profile,
        })
    }

    /// The live session of a token, marked used; `None` for an unknown or expired token.
    pub async fn authenticate(&self, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        self.retrying(Retry::Always, |client| self.authenticate_once(client, token_sha256.clone(), now_ms)).await
    }

    async fn authenticate_once(&self, client: Object, token_sha256: String, now_ms: i64) -> Result<Option<Caller>, StorageError> {
        let row = query_opt(
            &client,
            "UPDATE sessions SET last_seen_ms = $2 WHERE token_sha256 = $1 AND expires_at > $3 RETURNING user_id",
            &[&token_sha256, &now_ms, &(now_ms / 1000)],
        )
        .await?;
        Ok(match row {
            Some(row) => Some(Caller { user_id: row.try_get(0)?, token_sha256 }),
            None => None,
        })
    }

    /// Ends the token's session, or with `all` every session of its user; returns how many.
    pub async fn end_sessions(&self, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| self.end_sessions_once(client, token_sha256.clone(), all)).await
    }

    async fn end_sessions_once(&self, client: Object, token_sha256: String, all: bool) -> Result<usize, StorageError> {
        let sql = match all {
            true => "DELETE FROM sessions WHERE user_id = (SELECT user_id FROM sessions WHERE token_sha256 = $1)",
            false => "DELETE FROM sessions WHERE token_sha256 = $1",
        };
        Ok(rows(execute(&client, sql, &[&token_sha256]).await?))
    }

    /// The caller's live sessions, most recently used first, as reply entries (no tokens).
    pub async fn sessions_of(&self, caller: Caller, now: i64) -> Result<Vec<Value>, StorageError> {
        self.retrying(Retry::Always, |client| self.sessions_of_once(client, caller.clone(), now)).await
    }

    async fn sessions_of_once(&self, client: Object, caller: Caller, now: i64) -> Result<Vec<Value>, StorageError> {
        let found = query(
            &client,
            "SELECT device, appid, created_at, last_seen_ms, token_sha256 = $2, notify_token IS NOT NULL, device_type FROM sessions
             WHERE user_id = $1 AND expires_at > $3 ORDER BY last_seen_ms DESC",
            &[&caller.user_id, &caller.token_sha256, &now],
        )
        .await?;
        let entries = found.iter().map(|r| {
            Ok(json!({
                "device": r.try_get::<_, String>(0)?,
                "appid": r.try_get::<_, String>(1)?,
                "created": r.try_get::<_, i64>(2)?,
                "last_seen": r.try_get::<_, i64>(3)? / 1000,
                "current": r.try_get::<_, bool>(4)?,
                "push": r.try_get::<_, bool>(5)?,
                "dt": r.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
            }))
        });
        Ok(entries.collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Records a security event (see `store::audit`).
    pub async fn audit(&self, address_hash: i64, event: &str, detail: String, now: i64) -> Result<(), StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.audit_once(client, address_hash, event, detail.clone(), now)).await
    }

    async fn audit_once(&self, client: Object, address_hash: i64, event: &str, detail: String, now: i64) -> Result<(), StorageError> {
        execute(
            &client,
            "INSERT INTO audit_events (at, address_hash, event, detail) VALUES ($1, $2, $3, $4)",
            &[&now, &address_hash, &event, &detail],
        )
        .await?;
        Ok(())
    }

    /// The events of an address (by its phone hash), newest first.
    pub async fn audit_events(&self, address_hash: i64) -> Result<Vec<Value>, StorageError> {
        self.retrying(Retry::Always, |client| self.audit_events_once(client, address_hash)).await
    }

    async fn audit_events_once(&self, client: Object, address_hash: i64) -> Result<Vec<Value>, StorageError> {
        let found = query(
            &client,
            "SELECT at, event, detail FROM audit_events WHERE address_hash = $1 ORDER BY at DESC, id DESC LIMIT $2",
            &[&address_hash, &MAX_EVENTS],
        )
        .await?;
        let entries = found.iter().map(|r| Ok(audit::entry(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)));
        Ok(entries.collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Deletes the events older than `before`; returns how many.
    pub async fn purge_audit(&self, before: i64) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| self.purge_audit_once(client, before)).await
    }

    async fn purge_audit_once(&self, client: Object, before: i64) -> Result<usize, StorageError> {
        Ok(rows(execute(&client, "DELETE FROM audit_events WHERE at < $1", &[&before]).await?))
    }

    /// Deletes an account (see `store::accounts`); `None` when there is no such user.
    pub async fn delete_account(&self, user_id: i64, now: i64) -> Result<Option<DeletedAccount>, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.delete_account_once(client, user_id, now)).await
    }

    async fn delete_account_once(&self, mut client: Object, user_id: i64, now: i64) -> Result<Option<DeletedAccount>, StorageError> {
        let tx = client.transaction().await?;
        let Some(user) = query_opt(&tx, "SELECT address, uid, photo FROM users WHERE id = $1 FOR UPDATE", &[&user_id]).await? else {
            return Ok(None);
        };
        let (address, uid, photo): (String, String, String) = (user.try_get(0)?, user.try_get(1)?, user.try_get(2)?);
        let linked = query(&tx, "DELETE FROM linked_addresses WHERE user_id = $1 RETURNING address, uid", &[&user_id]).await?;
        let linked =
            linked.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()?;
        execute(&tx, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?;
        execute(&tx, "DELETE FROM contacts WHERE owner_id = $1", &[&user_id]).await?;
        execute(&tx, "DELETE FROM users WHERE id = $1", &[&user_id]).await?;
        execute(&tx, "DELETE FROM group_members WHERE phone = $1", &[&address]).await?;
        for (each, uid) in std::iter::once((address.clone(), uid)).chain(linked) {
            execute(&tx, "DELETE FROM otp_challenges WHERE address = $1", &[&each]).await?;
            execute(&tx, "DELETE FROM courier WHERE address = $1", &[&each]).await?;
            // A userdel still queued for an earlier account of the same address stays.
            execute(&tx, "DELETE FROM outbox WHERE recipient = $1 AND kind <> $2", &[&each, &USERDEL]).await?;
            // The platform made a user of each address a login came through: each goes there.
            if !uid.is_empty() {
                queue_userdel(&tx, &each, &uid, now).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(DeletedAccount { address, photo }))
    }

    /// The user an operator names (see `store::operators`).
    pub async fn find_user(&self, key: UserKey) -> Result<Option<UserRecord>, StorageError> {
        self.retrying(Retry::Always, |client| self.find_user_once(client, key.clone())).await
    }

    async fn find_user_once(&self, client: Object, key: UserKey) -> Result<Option<UserRecord>, StorageError> {
        let select = "SELECT id, address, uid, name, created_at, last_login FROM users";
        let found = match &key {
            UserKey::Address(address) => {
                let linked = "address = $1 OR id = (SELECT user_id FROM linked_addresses WHERE address = $1)";
                query_opt(&client, &format!("{select} WHERE {linked} ORDER BY id LIMIT 1"), &[address]).await?
            }
            UserKey::Uid(uid) => query_opt(&client, &format!("{select} WHERE uid = $1 ORDER BY id LIMIT 1"), &[uid]).await?,
            UserKey::Id(id) => query_opt(&client, &format!("{select} WHERE id = $1"), &[id]).await?,
        };
        let user = found.map(|r| {
            Ok::<_, tokio_postgres::Error>(UserRecord {
                id: r.try_get(0)?,
                address: r.try_get(1)?,
                uid: r.try_get(2)?,
                name: r.try_get(3)?,
                created_at: r.try_get(4)?,
                last_login: r.try_get(5)?,
            })
        });
        Ok(user.transpose()?)
    }

    /// A user's live sessions for an operator, most recently used first.
    pub async fn user_sessions(&self, user_id: i64, now: i64) -> Result<Vec<Value>, StorageError> {
        self.retrying(Retry::Always, |client| self.user_sessions_once(client, user_id, now)).await
    }

    async fn user_sessions_once(&self, client: Object, user_id: i64, now: i64) -> Result<Vec<Value>, StorageError> {
        let found = query(
            &client,
            "SELECT substr(token_sha256, 1, $3), appid, device, created_at, last_seen_ms, expires_at, notify_token IS NOT NULL
             FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY last_seen_ms DESC",
            &[&user_id, &now, &(SESSION_ID_CHARS as i32)],
        )
        .await?;
        let entries = found.iter().map(|r| {
            Ok(session_entry(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?))
        });
        Ok(entries.collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Ends one session of the user (named by its id) or all of them; returns how many.
    pub async fn revoke_sessions(&self, user_id: i64, session: Option<String>) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| self.revoke_sessions_once(client, user_id, session.clone())).await
    }

    async fn revoke_sessions_once(&self, client: Object, user_id: i64, session: Option<String>) -> Result<usize, StorageError> {
        let ended = match session {
            Some(session) => {
                execute(
                    &client,
                    "DELETE FROM sessions WHERE user_id = $1 AND substr(token_sha256, 1, $3) = $2",
                    &[&user_id, &session, &(SESSION_ID_CHARS as i32)],
                )
                .await?
            }
            None => execute(&client, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?,
        };
        Ok(rows(ended))
    }

    /// Replaces the push registration of a session (`None` removes it).
    pub async fn set_push(&self, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| self.set_push_once(client, token_sha256.clone(), push.clone())).await
    }

    async fn set_push_once(&self, client: Object, token_sha256: String, push: Option<PushRegistration>) -> Result<(), StorageError> {
        execute(
            &client,
            "UPDATE sessions SET notify_token = $2, notify_sender = $3, device_type = $4 WHERE token_sha256 = $1",
            &[
                &token_sha256,
                &push.as_ref().map(|p| &p.token),
                &push.as_ref().and_then(|p| p.sender.as_ref()),
                &push.as_ref().and_then(|p| p.device_type.as_ref()),
            ],
        )
        .await?;
        Ok(())
    }

    /// The profile of a user.
    pub async fn profile_of(&self, user_id: i64) -> Result<Profile, StorageError> {
        self.retrying(Retry::Always, |client| self.profile_of_once(client, user_id)).await
    }

    async fn profile_of_once(&self, client: Object, user_id: i64) -> Result<Profile, StorageError> {
        let row = query_one(
            &client,
            "SELECT u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail FROM users u WHERE u.id = $1",
            &[&user_id],
        )
        .await?;
        Ok(profile_from_row(&row)?)
    }

    /// Applies a profile change and bumps `ts`; returns the new profile.
    pub async fn change_profile(&self, user_id: i64, change: ProfileChange, now: i64) -> Result<Profile, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.change_profile_once(client, user_id, change.clone(), now)).await
    }

    async fn change_profile_once(
        &self,
        mut client: Object,
        user_id: i64,
        change: ProfileChange,
        now: i64,
    ) -> Result<Profile, StorageError> {
        let tx = client.transaction().await?;
        if let Some(photo) = change.photo.as_deref() {
            lock_file(&tx, photo).await?;
        }
        let row = query_one(
            &tx,
            "UPDATE users u SET name = coalesce($2, u.name), status = coalesce($3, u.status), photo = coalesce($4, u.photo),
                 thumbnail = CASE WHEN $4::TEXT IS NULL THEN u.thumbnail ELSE $6 END, ts = $5
             WHERE u.id = $1 RETURNING u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail",
            &[&user_id, &change.name, &change.status, &change.photo, &now, &change.thumbnail],
        )
        .await?;
        let profile = profile_from_row(&row)?;
        // Contacts refresh the profile; no notification is shown (no subject).
        let payload = NoticeBody::of_user(&profile, "").payload();
        execute(
            &tx,
            "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
             SELECT u.address, $2::text, $3::bigint, $3::bigint FROM contacts c JOIN users u ON u.id = c.owner_id
             WHERE c.phone_hash = (SELECT address_hash FROM users WHERE id = $1) AND u.id <> $1 ORDER BY u.id",
            &[&user_id, &payload, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(profile)
    }

    /// Records uploaded phones as contacts and returns one page of matching users (never
    /// the caller), ordered by (ts, address), plus whether more follow (see `contacts::sync`).
    /// `hashes` are the hashes of the uploaded phones. `admit` sees how many uploaded phones
    /// are not yet contacts and how many contacts the upload leaves; a refusal leaves nothing written.
    pub async fn sync_contacts(
        &self,
        q: SyncQuery,
        hashes: Vec<i64>,
        admit: impl FnOnce(usize, usize) -> Admission<ApiError> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), ApiError>, StorageError> {
        self.guarded(|client| self.sync_contacts_once(client, q, hashes, admit)).await
    }

    async fn sync_contacts_once(
        &self,
        mut client: Object,
        q: SyncQuery,
        hashes: Vec<i64>,
        admit: impl FnOnce(usize, usize) -> Admission<ApiError> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), ApiError>, StorageError> {
        let tx = client.transaction().await?;
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        let mut stored = 0;
        if q.phones.is_some() || q.reset {
            // Two syncs of one user count and write one after the other; every change to the
            // user's contacts takes this lock first, so none waits for another in reverse.
            let owner = query_opt(&tx, "SELECT contact_count FROM users WHERE id = $1 FOR UPDATE", &[&q.owner]).await?;
            stored = owner.map(|row| row.try_get::<_, i64>(0)).transpose()?.map_or(0, count);
        }
        if q.reset {
            if q.phones.is_some() {
                // Known before a reset stays known: uploading the same book again costs nothing.
                let new = query_one(
                    &tx,
                    "SELECT count(*) FROM unnest($2::bigint[]) AS j(value)
                     WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = $1 AND c.phone_hash = j.value)",
                    &[&q.owner, &hashes],
                )
                .await?;
                // Returning rolls the transaction back: nothing was written.
                if let Err(refused) = admit(count(new.try_get(0)?), hashes.len()).await {
                    return Ok(Err(refused));
                }
            }
            execute(
                &tx,
                "WITH removed AS (DELETE FROM contacts WHERE owner_id = $1 RETURNING 1)
                 UPDATE users SET contact_count = contact_count - (SELECT count(*) FROM removed) WHERE id = $1",
                &[&q.owner],
            )
            .await?;
            if q.phones.is_some() {
                self.add_contacts(&tx, q.owner, &hashes).await?;
            }
        } else if q.phones.is_some() {
            // The insert finds which phones are new; a refusal rolls it back.
            let after = self.add_contacts(&tx, q.owner, &hashes).await?;
            if let Err(refused) = admit(after.saturating_sub(stored), after).await {
                return Ok(Err(refused));
            }
        }
        let (after_ts, after_address) = q.after.as_ref().map_or((i64::MIN, ""), |(ts, address)| (*ts, address.as_str()));
        let limit = i64::try_from(PAGE_SIZE + 1).unwrap_or(i64::MAX);
        let found = match &q.phones {
            Some(phones) => {
                query(
                    &tx,
                    "SELECT u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail FROM users u
                     WHERE u.address = ANY($1::text[]) AND u.id <> $2 AND (u.ts, u.address) > ($3::bigint, $4::text)
                     ORDER BY u.ts, u.address LIMIT $5",
                    &[phones, &q.owner, &after_ts, &after_address, &limit],
                )
                .await?
            }
            None => query(
                &tx,
                "SELECT u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail FROM contacts c JOIN users u ON u.address_hash = c.phone_hash
                     WHERE c.owner_id = $1 AND u.id <> $1 AND u.ts >= $2 AND (u.ts, u.address) > ($3::bigint, $4::text)
                     ORDER BY u.ts, u.address LIMIT $5",
                &[&q.owner, &q.since, &after_ts, &after_address, &limit],
            )
            .await?,
        };
        tx.commit().await?;
        let mut page = found.iter().map(profile_from_row).collect::<Result<Vec<_>, _>>()?;
        let more = page.len() > PAGE_SIZE;
        page.truncate(PAGE_SIZE);
        Ok(Ok((page, more)))
    }

    /// Adds the phones of `hashes` that `owner` does not have yet to their contacts, counting
    /// them in `contact_count`; returns how many contacts the owner has now.
    async fn add_contacts(&self, tx: &deadpool_postgres::Transaction<'_>, owner: i64, hashes: &[i64]) -> Result<usize, StorageError> {
        let counted = query_opt(
            tx,
            "WITH added AS (
                 INSERT INTO contacts (owner_id, phone_hash) SELECT $1::bigint, h FROM unnest($2::bigint[]) AS h ON CONFLICT DO NOTHING
                 RETURNING 1)
             UPDATE users SET contact_count = contact_count + (SELECT count(*) FROM added) WHERE id = $1 RETURNING contact_count",
            &[&owner, &hashes],
        )
        .await?;
        let after = counted.map(|row| row.try_get::<_, i64>(0)).transpose()?;
        Ok(after.map_or(0, |n| usize::try_from(n).unwrap_or(0)))
    }

    /// Removes phones, given by their hashes, from a user's contacts; returns how many were there.
    pub async fn remove_contacts(&self, owner: i64, hashes: Vec<i64>) -> Result<usize, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.remove_contacts_once(client, owner, hashes.clone())).await
    }

    async fn remove_contacts_once(&self, mut client: Object, owner: i64, hashes: Vec<i64>) -> Result<usize, StorageError> {
        let tx = client.transaction().await?;
        // The lock an upload takes, first: an upload holds it while it inserts.
        execute(&tx, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&owner]).await?;
        let removed =
            rows(execute(&tx, "DELETE FROM contacts WHERE owner_id = $1 AND phone_hash = ANY($2::bigint[])", &[&owner, &hashes]).await?);
        if removed > 0 {
            let removed = i64::try_from(removed).unwrap_or(i64::MAX);
            execute(&tx, "UPDATE users SET contact_count = contact_count - $2 WHERE id = $1", &[&owner, &removed]).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The next due notice, leased for `lease_secs` so no other sender takes it meanwhile.
    /// A notice another instance is taking at this moment is skipped, not waited for.
    pub async fn take_next_notice(&self, now: i64, lease_secs: i64) -> Result<Option<Pending>, StorageError> {
        self.retrying(Retry::Always, |client| self.take_next_notice_once(client, now, lease_secs)).await
    }

    async fn take_next_notice_once(&self, client: Object, now: i64, lease_secs: i64) -> Result<Option<Pending>, StorageError> {
        let row = query_opt(
            &client,
            "UPDATE outbox SET next_attempt_at = $2 WHERE id =
                 (SELECT id FROM outbox WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, recipient, payload, attempts, kind",
            &[&now, &(now + lease_secs)],
        )
        .await?;
        Ok(match row {
            Some(r) => Some(Pending {
                id: r.try_get(0)?,
                recipient: r.try_get(1)?,
                payload: r.try_get(2)?,
                attempts: counter(r.try_get(3)?),
                kind: r.try_get(4)?,
            }),
            None => None,
        })
    }

    /// Upstream took the notice: it is never sent again.
    pub async fn acknowledge_notice(&self, id: i64) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| self.acknowledge_notice_once(client, id)).await
    }

    async fn acknowledge_notice_once(&self, client: Object, id: i64) -> Result<(), StorageError> {
        execute(&client, "DELETE FROM outbox WHERE id = $1", &[&id]).await?;
        Ok(())
    }

    /// A failed send: try again at `next_attempt_at` (unix seconds).
    pub async fn reschedule_notice(&self, id: i64, attempts: u32, next_attempt_at: i64, error: String) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| self.reschedule_notice_once(client, id, attempts, next_attempt_at, error.clone())).await
    }

    async fn reschedule_notice_once(
        &self,
        client: Object,
        id: i64,
        attempts: u32,
        next_attempt_at: i64,
        error: String,
    ) -> Result<(), StorageError> {
        execute(
            &client,
            "UPDATE outbox SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1",
            &[&id, &int(attempts), &next_attempt_at, &error],
        )
        .await?;
        Ok(())
    }

    /// Stores the challenge and queues its sealed message `(address, appid, sealed)` in one
    /// transaction, leased until `lease_until`; `admit` runs once the resend window allows
    /// a new code, before anything is written. An advisory lock on the address makes
    /// concurrent starts for it take turns, so the resend window holds across instances.
    pub async fn enqueue_message(
        &self,
        challenge: NewChallenge,
        message: (String, String, Vec<u8>),
        lease_until: i64,
        admit: impl FnOnce() -> Admission<Refusal> + Send + 'static,
    ) -> Result<Enqueued, StorageError> {
        let c = &challenge;
        let (address, appid, sealed) = &message;
        let (mut admit, mut retried) = (Some(admit), false);
        loop {
            // Returning without a commit rolls the transaction back and releases the lock.
            let (tx, previous) = self.begin_retrying("SELECT otpgate_lock_code($1)", &[&c.address]).await?;
            if let Some(previous) = previous.map(|row| row.try_get::<_, Option<i64>>(0)).transpose()?.flatten() {
                let wait = previous + c.resend_secs - c.now;
                if wait > 0 {
                    return Ok(Enqueued::TooSoon(wait as u64));
                }
            }
            // Checked before anything is written: a refusal leaves the previous code valid.
            // Once: a start that runs again below was admitted already.
            if let Some(admit) = admit.take() {
                if let Err(refusal) = admit().await {
                    return Ok(Enqueued::Refused(refusal));
                }
            }
            let (otp_hash, challenge_sha256): (&[u8], &[u8]) = (&c.otp_hash, &c.challenge_sha256);
            let expires_at = c.now + c.ttl_secs;
            let params: &[&(dyn ToSql + Sync)] =
                &[&c.address, &c.appid, &otp_hash, &c.now, &expires_at, &challenge_sha256, address, appid, sealed, &lease_until];
            let stored = tx.query_one_and_commit(
                "WITH challenge AS (
                     INSERT INTO otp_challenges (address, appid, otp_hash, created_at, expires_at, attempts, claimed_at, challenge_sha256, bound_attempts)
                     VALUES ($1, $2, $3, $4, $5, 0, NULL, $6, 0)
                     ON CONFLICT (address) DO UPDATE SET appid = excluded.appid, otp_hash = excluded.otp_hash,
                         created_at = excluded.created_at, expires_at = excluded.expires_at, attempts = 0, claimed_at = NULL,
                         challenge_sha256 = excluded.challenge_sha256, bound_attempts = 0)
                 INSERT INTO courier (address, appid, otp_hash, sealed, status, next_attempt_ms, expires_at, created_at)
                 VALUES ($7, $8, $3, $9, 'queued', $10, $5, $4) RETURNING id",
                params,
            );
            match self.timed(stored).await {
                Ok(row) => return Ok(Enqueued::Stored(row.try_get(0)?)),
                // A demoted primary refuses the write (the lock it took): again on a fresh
                // connection, whose transaction checks the resend window anew. Only then:
                // after a connection lost at the COMMIT the code may be stored already, and
                // its message on its way; the client asks again.
                Err(e) if interrupted(&e) == Some(Interrupted::NotApplied) && !std::mem::replace(&mut retried, true) => {
                    tracing::info!("retrying on a fresh PostgreSQL connection after: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes up to [`BATCH`] due messages, leasing them until `lease_until`. Rows another
    /// instance is claiming are skipped, so no row is handed out twice. A message the key
    /// cannot open (the key changed since it was queued) fails for good.
    pub async fn claim_due_messages(&self, seal: MessageSeal, now_ms: i64, lease_until: i64) -> Result<Claimed, StorageError> {
        self.retrying(Retry::Always, |client| self.claim_due_messages_once(client, seal.clone(), now_ms, lease_until)).await
    }

    async fn claim_due_messages_once(
        &self,
        mut client: Object,
        seal: MessageSeal,
        now_ms: i64,
        lease_until: i64,
    ) -> Result<Claimed, StorageError> {
        let tx = client.transaction().await?;
        // A code that was used, replaced by a newer one or expired is not worth an SMS.
        execute(
            &tx,
            "UPDATE courier SET status = 'cancelled', last_error = 'code no longer valid (used, replaced or expired)', sealed = NULL
             WHERE id IN (SELECT id FROM courier WHERE status = 'queued' AND NOT EXISTS (SELECT 1 FROM otp_challenges c
                 WHERE c.address = courier.address AND c.otp_hash = courier.otp_hash AND c.expires_at > $1) FOR UPDATE SKIP LOCKED)",
            &[&(now_ms / 1000)],
        )
        .await?;
        let batch_size = i64::try_from(BATCH).unwrap_or(i64::MAX);
        let due = query(
            &tx,
            "SELECT id, address, appid, otp_hash, sealed, attempts, expires_at FROM courier
             WHERE status = 'queued' AND next_attempt_ms <= $1 ORDER BY next_attempt_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now_ms, &batch_size],
        )
        .await?;
        let mut batch = Vec::with_capacity(due.len());
        for r in &due {
            let mut row = QueuedMessage {
                id: r.try_get(0)?,
                address: r.try_get(1)?,
                appid: r.try_get(2)?,
                otp_hash: r.try_get(3)?,
                otp: String::new(),
                body: String::new(),
                attempts: counter(r.try_get(5)?),
                expires_at: r.try_get(6)?,
            };
            let sealed: Option<Vec<u8>> = r.try_get(4)?;
            match sealed.and_then(|sealed| courier::open_message(&seal, &sealed, &row.address, &row.otp_hash)) {
                Some((otp, body)) => {
                    (row.otp, row.body) = (otp, body);
                    batch.push(row);
                }
                None => {
                    let error = "the message cannot be decrypted: the server key changed since it was queued";
                    tracing::warn!(to = %Address::from_stored(&row.address).masked(), "code not delivered: {error}");
                    execute(&tx, "UPDATE courier SET status = 'failed', last_error = $2, sealed = NULL WHERE id = $1", &[&row.id, &error])
                        .await?;
                    execute(&tx, "DELETE FROM otp_challenges WHERE address = $1 AND otp_hash = $2", &[&row.address, &row.otp_hash]).await?;
                }
            }
        }
        if !batch.is_empty() {
            let ids: Vec<i64> = batch.iter().map(|row| row.id).collect();
            execute(&tx, "UPDATE courier SET next_attempt_ms = $2 WHERE id = ANY($1)", &[&ids, &lease_until]).await?;
        }
        let left = query_one(&tx, "SELECT min(next_attempt_ms), count(*) FROM courier WHERE status = 'queued'", &[]).await?;
        let (next_due, queued) = (left.try_get(0)?, left.try_get(1)?);
        tx.commit().await?;
        Ok(Claimed { batch, next_due, queued })
    }

    /// Records a delivery attempt. A final outcome wipes the sealed message; a final
    /// failure also deletes the challenge, since nobody received that code.
    pub async fn record_attempt(
        &self,
        id: i64,
        attempts: u32,
        outcome: AttemptOutcome,
        address: String,
        otp_hash: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.retrying(Retry::Always, |client| {
            self.record_attempt_once(client, id, attempts, outcome.clone(), address.clone(), otp_hash.clone())
        })
        .await
    }

    async fn record_attempt_once(
        &self,
        client: Object,
        id: i64,
        attempts: u32,
        outcome: AttemptOutcome,
        address: String,
        otp_hash: Vec<u8>,
    ) -> Result<(), StorageError> {
        // One statement each, so none needs a transaction of its own.
        let attempts = int(attempts);
        match &outcome {
            AttemptOutcome::Sent => {
                execute(&client, "UPDATE courier SET status = 'sent', attempts = $2, sealed = NULL WHERE id = $1", &[&id, &attempts])
                    .await?;
            }
            AttemptOutcome::Failed(error) => {
                execute(
                    &client,
                    "WITH failed AS (UPDATE courier SET status = 'failed', attempts = $2, last_error = $3, sealed = NULL WHERE id = $1)
                     DELETE FROM otp_challenges WHERE address = $4 AND otp_hash = $5",
                    &[&id, &attempts, error, &address, &otp_hash],
                )
                .await?;
            }
            AttemptOutcome::Retry(error, retry_at) => {
                execute(
                    &client,
                    "UPDATE courier SET attempts = $2, last_error = $3, next_attempt_ms = $4 WHERE id = $1",
                    &[&id, &attempts, error, retry_at],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes finished rows created before `before` (unix seconds); returns how many.
    pub async fn purge_finished_messages(&self, before: i64) -> Result<usize, StorageError> {
        self.retrying(Retry::Always, |client| self.purge_finished_messages_once(client, before)).await
    }

    async fn purge_finished_messages_once(&self, client: Object, before: i64) -> Result<usize, StorageError> {
        let purged = execute(
            &client,
            "DELETE FROM courier WHERE id IN
                 (SELECT id FROM courier WHERE status <> 'queued' AND created_at < $1 FOR UPDATE SKIP LOCKED)",
            &[&before],
        )
        .await?;
        Ok(rows(purged))
    }
}

/// Queues the platform's `userdel` of the user `uid` at `address`.
async fn queue_userdel(tx: &impl GenericClient, address: &str, uid: &str, now: i64) -> Result<(), StorageError> {
    execute(
        tx,
        "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at, kind) VALUES ($1, $2, $3, $3, $4)",
        &[&address, &userdel_payload(uid), &now, &USERDEL],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Links an address (see `store::links`).
    pub async fn link_address(
        &self,
        user_id: i64,
        address: &str,
        claimed_code: Option<[u8; 32]>,
        now: i64,
    ) -> Result<LinkOutcome, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.link_address_once(client, user_id, address, claimed_code, now)).await
    }

    async fn link_address_once(
        &self,
        mut client: Object,
        user_id: i64,
        address: &str,
        claimed_code: Option<[u8; 32]>,
        now: i64,
    ) -> Result<LinkOutcome, StorageError> {
        let tx = client.transaction().await?;
        // Two links of one address wait for each other, instead of one failing on the key.
        execute(&tx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&address]).await?;
        let owner: Option<i64> =
            query_opt(&tx, "SELECT id FROM users WHERE address = $1", &[&address]).await?.map(|r| r.try_get(0)).transpose()?;
        let linked: Option<i64> = query_opt(&tx, "SELECT user_id FROM linked_addresses WHERE address = $1", &[&address])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let outcome = crate::store::links::outcome(user_id, owner, linked);
        if outcome == LinkOutcome::Linked {
            execute(&tx, "INSERT INTO linked_addresses (address, user_id, linked_at) VALUES ($1, $2, $3)", &[&address, &user_id, &now])
                .await?;
        }
        if matches!(outcome, LinkOutcome::Linked | LinkOutcome::AlreadyLinked) {
            if let Some(otp_hash) = claimed_code {
                let hash: &[u8] = &otp_hash;
                execute(&tx, "DELETE FROM otp_challenges WHERE address = $1 AND otp_hash = $2", &[&address, &hash]).await?;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Unlinks an address (see `store::links`).
    pub async fn unlink_address(&self, user_id: i64, address: &str, now: i64) -> Result<Option<usize>, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.unlink_address_once(client, user_id, address, now)).await
    }

    async fn unlink_address_once(&self, mut client: Object, user_id: i64, address: &str, now: i64) -> Result<Option<usize>, StorageError> {
        let tx = client.transaction().await?;
        let removed =
            query_opt(&tx, "DELETE FROM linked_addresses WHERE address = $1 AND user_id = $2 RETURNING uid", &[&address, &user_id]).await?;
        let Some(removed) = removed else { return Ok(None) };
        let uid: String = removed.try_get(0)?;
        let ended = execute(&tx, "DELETE FROM sessions WHERE user_id = $1 AND via = $2", &[&user_id, &address]).await?;
        if !uid.is_empty() {
            queue_userdel(&tx, address, &uid, now).await?;
        }
        tx.commit().await?;
        Ok(Some(rows(ended)))
    }

    /// A user's linked addresses, oldest first.
    pub async fn linked_addresses(&self, user_id: i64) -> Result<Vec<LinkedAddress>, StorageError> {
        self.retrying(Retry::Always, |client| self.linked_addresses_once(client, user_id)).await
    }

    async fn linked_addresses_once(&self, client: Object, user_id: i64) -> Result<Vec<LinkedAddress>, StorageError> {
        let found =
            query(&client, "SELECT address, linked_at FROM linked_addresses WHERE user_id = $1 ORDER BY linked_at, address", &[&user_id])
                .await?;
        Ok(found
            .iter()
            .map(|r| Ok(LinkedAddress { address: r.try_get(0)?, linked_at: r.try_get(1)? }))
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// The user a linked address belongs to, and that user's own address.
    pub async fn link_holder(&self, address: &str) -> Result<Option<(i64, String)>, StorageError> {
        self.retrying(Retry::Always, |client| self.link_holder_once(client, address)).await
    }

    async fn link_holder_once(&self, client: Object, address: &str) -> Result<Option<(i64, String)>, StorageError> {
        let found = query_opt(
            &client,
            "SELECT u.id, u.address FROM linked_addresses l JOIN users u ON u.id = l.user_id WHERE l.address = $1",
            &[&address],
        )
        .await?;
        Ok(found.map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?))).transpose()?)
    }
}

/// The group `gid` with its members, on any client (a transaction included).
async fn group_on(client: &impl GenericClient, gid: i64) -> Result<Option<Group>, StorageError> {
    let Some(row) = query_opt(client, "SELECT name, photo, thumbnail, ts FROM chat_groups WHERE gid = $1", &[&gid]).await? else {
        return Ok(None);
    };
    let mut group =
        Group { gid, name: row.try_get(0)?, photo: row.try_get(1)?, thumbnail: row.try_get(2)?, ts: row.try_get(3)?, members: Vec::new() };
    let members = query(client, "SELECT phone, role FROM group_members WHERE gid = $1 ORDER BY role DESC, phone", &[&gid]).await?;
    group.members =
        members.iter().map(|r| Ok((r.try_get(0)?, i64::from(r.try_get::<_, i32>(1)?)))).collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(Some(group))
}

async fn add_group_members(tx: &impl GenericClient, gid: i64, phones: &[String], role: i64) -> Result<(), StorageError> {
    let role = role as i32;
    execute(
        tx,
        "INSERT INTO group_members (gid, phone, role) SELECT $1, phone, $3 FROM unnest($2::text[]) AS phone ON CONFLICT DO NOTHING",
        &[&gid, &phones, &role],
    )
    .await?;
    Ok(())
}

/// Queues the group's notices for its members and `also_tell` who are users, but the
/// actor: each recipient's lists the members they know (see `Group::notice_for`).
async fn notify_group(
    tx: &impl GenericClient,
    group: &Group,
    write: &GroupWrite,
    subject: &str,
    phones: &PhoneHasher,
) -> Result<(), StorageError> {
    let told = write.told(group);
    let rows = query(tx, "SELECT address FROM users WHERE address = ANY($1::text[]) ORDER BY address", &[&told]).await?;
    let recipients = rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?;
    let members = crate::store::groups::member_hashes(group, phones);
    let hashes: Vec<i64> = members.keys().copied().collect();
    let rows = query(
        tx,
        "SELECT u.address, c.phone_hash FROM users u JOIN contacts c ON c.owner_id = u.id
         WHERE u.address = ANY($1::text[]) AND c.phone_hash = ANY($2::bigint[])",
        &[&recipients, &hashes],
    )
    .await?;
    let mut known = std::collections::HashSet::new();
    for row in &rows {
        let (recipient, hash): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        known.extend(members.get(&hash).into_iter().flatten().map(|phone| (recipient.clone(), phone.clone())));
    }
    let (to, payloads): (Vec<String>, Vec<String>) = write.notices(group, subject, &recipients, &known).into_iter().unzip();
    execute(
        tx,
        "INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
         SELECT recipient, payload, $3, $3 FROM unnest($1::text[], $2::text[]) AS n(recipient, payload)",
        &[&to, &payloads, &write.now],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// A group with its members.
    pub async fn group(&self, gid: i64) -> Result<Option<Group>, StorageError> {
        self.retrying(Retry::Always, |client| self.group_once(client, gid)).await
    }

    async fn group_once(&self, client: Object, gid: i64) -> Result<Option<Group>, StorageError> {
        group_on(&client, gid).await
    }

    /// Applies a group change and queues its notices, in one transaction.
    pub async fn write_group(&self, write: GroupWrite, phones: &PhoneHasher) -> Result<Group, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.write_group_once(client, write.clone(), phones)).await
    }

    async fn write_group_once(&self, mut client: Object, write: GroupWrite, phones: &PhoneHasher) -> Result<Group, StorageError> {
        let tx = client.transaction().await?;
        let (photo, thumbnail) = match &write.photo {
            Some((photo, thumbnail)) => (Some(photo), thumbnail.as_ref()),
            None => (None, None),
        };
        if let Some(photo) = photo {
            lock_file(&tx, photo).await?;
        }
        if write.create {
            execute(
                &tx,
                "INSERT INTO chat_groups (gid, name, photo, thumbnail, created_at, ts) VALUES ($1, coalesce($2, ''), coalesce($3, ''), $4, $5, $5)",
                &[&write.gid, &write.name, &photo, &thumbnail, &write.now],
            )
            .await?;
        } else {
            execute(
                &tx,
                "UPDATE chat_groups SET name = coalesce($2, name), photo = coalesce($3, photo),
                     thumbnail = CASE WHEN $3::TEXT IS NULL THEN thumbnail ELSE $4 END, ts = $5
                 WHERE gid = $1",
                &[&write.gid, &write.name, &photo, &thumbnail, &write.now],
            )
            .await?;
        }
        let owner = OWNER as i32;
        match &write.members {
            MemberChange::Keep => {}
            MemberChange::Create { owner, members } => {
                add_group_members(&tx, write.gid, std::slice::from_ref(owner), OWNER).await?;
                add_group_members(&tx, write.gid, members, MEMBER).await?;
            }
            MemberChange::Replace { keep, members } => {
                let staying: Vec<String> = members.iter().chain(std::iter::once(keep)).cloned().collect();
                execute(
                    &tx,
                    "DELETE FROM group_members WHERE gid = $1 AND role < $2 AND NOT (phone = ANY($3::text[]))",
                    &[&write.gid, &owner, &staying],
                )
                .await?;
                add_group_members(&tx, write.gid, members, MEMBER).await?;
            }
            MemberChange::Add(phones) => add_group_members(&tx, write.gid, phones, MEMBER).await?,
            MemberChange::Remove(phones) => {
                execute(
                    &tx,
                    "DELETE FROM group_members WHERE gid = $1 AND role < $2 AND phone = ANY($3::text[])",
                    &[&write.gid, &owner, phones],
                )
                .await?;
            }
            MemberChange::SetRole { phones, role } => {
                let role = *role as i32;
                execute(
                    &tx,
                    "UPDATE group_members SET role = $4 WHERE gid = $1 AND role < $2 AND phone = ANY($3::text[])",
                    &[&write.gid, &owner, phones, &role],
                )
                .await?;
            }
        }
        let group = group_on(&tx, write.gid).await?.ok_or_else(|| StorageError::Thread(format!("group {} vanished", write.gid)))?;
        if let Some(subject) = &write.subject {
            notify_group(&tx, &group, &write, subject, phones).await?;
        }
        tx.commit().await?;
        Ok(group)
    }

    /// Tells the members but `actor` that the group is gone, then deletes it.
    pub async fn delete_group(
        &self,
        gid: i64,
        actor: String,
        subject: String,
        now: i64,
        phones: &PhoneHasher,
    ) -> Result<bool, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.delete_group_once(client, gid, actor.clone(), subject.clone(), now, phones)).await
    }

    async fn delete_group_once(
        &self,
        mut client: Object,
        gid: i64,
        actor: String,
        subject: String,
        now: i64,
        phones: &PhoneHasher,
    ) -> Result<bool, StorageError> {
        let tx = client.transaction().await?;
        execute(&tx, "SELECT 1 FROM chat_groups WHERE gid = $1 FOR UPDATE", &[&gid]).await?;
        let Some(group) = group_on(&tx, gid).await? else { return Ok(false) };
        let (gone, write) = group.deletion(&actor, now);
        notify_group(&tx, &gone, &write, &subject, phones).await?;
        execute(&tx, "DELETE FROM chat_groups WHERE gid = $1", &[&gid]).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The groups `phone` belongs to that changed at or after `since`, oldest change first.
    pub async fn groups_of(&self, phone: String, since: i64, limit: usize) -> Result<Vec<Group>, StorageError> {
        self.retrying(Retry::Always, |client| self.groups_of_once(client, phone.clone(), since, limit)).await
    }

    async fn groups_of_once(&self, client: Object, phone: String, since: i64, limit: usize) -> Result<Vec<Group>, StorageError> {
        let limit = limit as i64;
        let gids = query(
            &client,
            "SELECT g.gid FROM group_members m JOIN chat_groups g ON g.gid = m.gid
             WHERE m.phone = $1 AND g.ts >= $2 ORDER BY g.ts, g.gid LIMIT $3",
            &[&phone, &since, &limit],
        )
        .await?;
        let mut groups = Vec::with_capacity(gids.len());
        for row in gids {
            groups.extend(group_on(&client, row.try_get(0)?).await?);
        }
        Ok(groups)
    }
}

/// Rows per statement when importing: a bound on the size of one statement's arrays.
const IMPORT_CHUNK: usize = 10_000;

impl PgStore {
    /// Writes an imported SQLite snapshot in one transaction (see `store::import`); refuses
    /// a database that has users already, so an import never mixes two histories.
    /// `phones` hashes the users' addresses, as the snapshot's address books are hashed.
    pub async fn import(&self, snapshot: Snapshot, phones: &PhoneHasher) -> Result<Imported, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(&tx, "LOCK TABLE users IN EXCLUSIVE MODE", &[]).await?;
        if query_opt(&tx, "SELECT 1 FROM users LIMIT 1", &[]).await?.is_some() {
            return Err(StorageError::Thread("the PostgreSQL database has users already; import into an empty one".into()));
        }
        for chunk in snapshot.users.chunks(IMPORT_CHUNK) {
            let column = |pick: fn(&UserRow) -> String| chunk.iter().map(pick).collect::<Vec<String>>();
            let number = |pick: fn(&UserRow) -> i64| chunk.iter().map(pick).collect::<Vec<i64>>();
            execute(
                &tx,
                "INSERT INTO users (id, address, uid, name, status, photo, created_at, last_login, ts, address_hash) OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
                     $9::bigint[], $10::bigint[])",
                &[
                    &number(|u| u.0),
                    &column(|u| u.1.clone()),
                    &column(|u| u.2.clone()),
                    &column(|u| u.3.clone()),
                    &column(|u| u.4.clone()),
                    &column(|u| u.5.clone()),
                    &number(|u| u.6),
                    &number(|u| u.7),
                    &number(|u| u.8),
                    &chunk.iter().map(|u| phones.hash(&u.1)).collect::<Vec<i64>>(),
                ],
            )
            .await?;
        }
        // New users continue after the imported ids.
        execute(&tx, "SELECT setval(pg_get_serial_sequence('users', 'id'), greatest((SELECT max(id) FROM users), 1))", &[]).await?;
        for chunk in snapshot.sessions.chunks(IMPORT_CHUNK) {
            let text = |pick: fn(&SessionRow) -> String| chunk.iter().map(pick).collect::<Vec<String>>();
            let number = |pick: fn(&SessionRow) -> i64| chunk.iter().map(pick).collect::<Vec<i64>>();
            execute(
                &tx,
                "INSERT INTO sessions (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at, via)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[])",
                &[
                    &text(|s| s.0.clone()),
                    &number(|s| s.1),
                    &text(|s| s.2.clone()),
                    &text(|s| s.3.clone()),
                    &number(|s| s.4),
                    &number(|s| s.5),
                    &number(|s| s.6),
                    &text(|s| s.7.clone()),
                ],
            )
            .await?;
        }
        for (address, user_id, uid, linked_at) in &snapshot.links {
            execute(
                &tx,
                "INSERT INTO linked_addresses (address, user_id, uid, linked_at) VALUES ($1, $2, $3, $4)",
                &[address, user_id, uid, linked_at],
            )
            .await?;
        }
        execute(&tx, "INSERT INTO attachment_files (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", &[&snapshot.attachments])
            .await?;
        for group in &snapshot.groups {
            execute(
                &tx,
                "INSERT INTO chat_groups (gid, name, photo, thumbnail, created_at, ts) VALUES ($1, $2, $3, $4, $5, $5)",
                &[&group.gid, &group.name, &group.photo, &group.thumbnail, &group.ts],
            )
            .await?;
            let (phones, roles): (Vec<&str>, Vec<i32>) = group.members.iter().map(|(phone, role)| (phone.as_str(), *role as i32)).unzip();
            execute(
                &tx,
                "INSERT INTO group_members (gid, phone, role) SELECT $1, * FROM unnest($2::text[], $3::int[])",
                &[&group.gid, &phones, &roles],
            )
            .await?;
        }
        for chunk in snapshot.thumbnails.chunks(IMPORT_CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|t| t.0).collect();
            let jpegs: Vec<&[u8]> = chunk.iter().map(|t| t.1.as_slice()).collect();
            execute(
                &tx,
                "UPDATE users SET thumbnail = t.jpeg FROM unnest($1::bigint[], $2::bytea[]) AS t(id, jpeg) WHERE users.id = t.id",
                &[&ids, &jpegs],
            )
            .await?;
        }
        for chunk in snapshot.push.chunks(IMPORT_CHUNK) {
            let text = |pick: fn(&PushRow) -> Option<String>| chunk.iter().map(pick).collect::<Vec<Option<String>>>();
            execute(
                &tx,
                "UPDATE sessions SET notify_token = p.token, notify_sender = p.sender, device_type = p.dt
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS p(session, token, sender, dt)
                 WHERE sessions.token_sha256 = p.session",
                &[&text(|p| Some(p.0.clone())), &text(|p| Some(p.1.clone())), &text(|p| p.2.clone()), &text(|p| p.3.clone())],
            )
            .await?;
        }
        for chunk in snapshot.contacts.chunks(IMPORT_CHUNK) {
            let owners: Vec<i64> = chunk.iter().map(|c| c.0).collect();
            let hashes: Vec<i64> = chunk.iter().map(|c| c.1).collect();
            execute(
                &tx,
                "INSERT INTO contacts (owner_id, phone_hash) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                &[&owners, &hashes],
            )
            .await?;
        }
        execute(
            &tx,
            "UPDATE users SET contact_count = c.n FROM (SELECT owner_id, count(*) AS n FROM contacts GROUP BY owner_id) AS c
             WHERE users.id = c.owner_id",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(Imported { users: snapshot.users.len(), sessions: snapshot.sessions.len(), contacts: snapshot.contacts.len() })
    }
}

/// Opens a connection by trying the URL's hosts one at a time, each within `timeout`.
/// tokio-postgres tries them in turn too, but bounds only the TCP connect: a frozen
/// server accepts the connection and never answers the startup, so the next host would
/// never be tried. The host that last took a connection is tried first.
struct HostByHost {
    tls: MakeRustlsConnect,
    timeout: Duration,
    last_good: AtomicUsize,
}

impl deadpool_postgres::Connect for HostByHost {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let hosts = single_hosts(config);
        Box::pin(async move {
            let mut order: Vec<usize> = (0..hosts.len()).collect();
            if config_balances(&hosts) {
                use rand::seq::SliceRandom;
                order.shuffle(&mut rand::thread_rng());
            } else {
                order.rotate_left(self.last_good.load(Ordering::Relaxed).min(hosts.len().saturating_sub(1)));
            }
            // The driver's own "timeout waiting for server": its error has no other public
            // constructor, and the pool's `Connect` must answer one.
            let mut failure = tokio_postgres::Error::__private_api_timeout();
            for index in order {
                let host = &hosts[index];
                let attempt = tokio::time::timeout(self.timeout, host.connect(self.tls.clone())).await;
                match attempt {
                    Ok(Ok((client, connection))) => {
                        self.last_good.store(index, Ordering::Relaxed);
                        let task = tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::debug!("PostgreSQL connection ended: {}", describe(&e));
                            }
                        });
                        return Ok((client, task));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(host = %host_name(host), "PostgreSQL host not used: {}", describe(&e));
                        failure = e;
                    }
                    Err(_) => {
                        let waited = self.timeout.as_millis();
                        tracing::warn!(host = %host_name(host), "PostgreSQL host not used: no answer within {waited} ms (DB_CONNECT_TIMEOUT_MS)");
                        failure = tokio_postgres::Error::__private_api_timeout();
                    }
                }
            }
            Err(failure)
        })
    }
}

/// Whether the URL asks for hosts in random order (`load_balance_hosts=random`).
fn config_balances(hosts: &[tokio_postgres::Config]) -> bool {
    hosts.first().is_some_and(|host| host.get_load_balance_hosts() == LoadBalanceHosts::Random)
}

/// `host:port` of a one-host configuration, for logs (never its credentials).
fn host_name(config: &tokio_postgres::Config) -> String {
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (_, Some(address)) => address.to_string(),
        (Some(Host::Tcp(name)), None) => name.clone(),
        (Some(Host::Unix(path)), None) => path.display().to_string(),
        (None, None) => String::new(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// One configuration per host of `config`, each with every other setting of it, in the
/// URL's order (a port per host, or one port for all, as libpq reads them).
fn single_hosts(config: &tokio_postgres::Config) -> Vec<tokio_postgres::Config> {
    let (hosts, addresses, ports) = (config.get_hosts(), config.get_hostaddrs(), config.get_ports());
    let count = hosts.len().max(addresses.len());
    if count <= 1 {
        return vec![config.clone()];
    }
    (0..count)
        .map(|i| {
            let mut one = tokio_postgres::Config::new();
            if let Some(user) = config.get_user() {
                one.user(user);
            }
            if let Some(password) = config.get_password() {
                one.password(password);
            }
            if let Some(dbname) = config.get_dbname() {
                one.dbname(dbname);
            }
            if let Some(options) = config.get_options() {
                one.options(options);
            }
            if let Some(name) = config.get_application_name() {
                one.application_name(name);
            }
            if let Some(timeout) = config.get_connect_timeout() {
                one.connect_timeout(*timeout);
            }
            if let Some(timeout) = config.get_tcp_user_timeout() {
                one.tcp_user_timeout(*timeout);
            }
            if let Some(interval) = config.get_keepalives_interval() {
                one.keepalives_interval(interval);
            }
            if let Some(retries) = config.get_keepalives_retries() {
                one.keepalives_retries(retries);
            }
            one.ssl_mode(config.get_ssl_mode())
                .ssl_negotiation(config.get_ssl_negotiation())
                .keepalives(config.get_keepalives())
                .keepalives_idle(config.get_keepalives_idle())
                .target_session_attrs(config.get_target_session_attrs())
                .channel_binding(config.get_channel_binding())
                .load_balance_hosts(config.get_load_balance_hosts());
            match hosts.get(i) {
                Some(Host::Tcp(name)) => {
                    one.host(name);
                }
                Some(Host::Unix(path)) => {
                    one.host_path(path);
                }
                None => {}
            }
            if let Some(address) = addresses.get(i) {
                one.hostaddr(*address);
            }
            one.port(ports.get(i).or(ports.first()).copied().unwrap_or(5432));
            one
        })
        .collect()
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

    /// `answers` within the query timeout. When a failover interrupted it, the idle
    /// connections go (they lead to the same server; the one it used is among them, back
    /// in the pool), so that the next request connects afresh to whichever host takes writes.
    async fn timed<T>(&self, answers: impl Future<Output = Result<T, StorageError>>) -> Result<T, StorageError> {
        let outcome = tokio::time::timeout(self.query_timeout, answers).await.unwrap_or(Err(StorageError::TimedOut(self.query_timeout)));
        if let Err(e) = &outcome {
            if interrupted(e).is_some() {
                let dropped = self.pool.retain(|_, _| false).removed.len();
                tracing::warn!(dropped, "PostgreSQL connection lost ({e}); idle connections dropped, new ones will be opened");
            }
        }
        outcome
    }

    /// [`guarded`](Self::guarded), and once more on a fresh connection when a failover
    /// interrupted the first run and `retry` allows it.
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

    /// BEGIN and `sql` on a connection of its own (see [`Pipelined::begin_with`]); again
    /// on a fresh connection when a failover interrupted it, since nothing was written yet.
    async fn begin_retrying(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(Pipelined, Option<Row>), StorageError> {
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

/// `error` with the server's message, for the "db error" that tokio-postgres says alone.
/// The message only: its DETAIL may quote the row (an address), and no log may hold one.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = with_causes(error);
    if error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        text.push_str(" (the server is a standby: list every host in DATABASE_URL with ?target_session_attrs=read-write)");
    }
    text
}

/// How the server's certificate is checked, from the URL's `sslmode` (libpq's words).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CertificateCheck {
    /// `prefer` (the default) and `require`: encrypted, certificate not checked, as libpq
    /// does; it keeps out eavesdroppers, not a server that pretends to be the database.
    None,
    /// `verify-ca` and `verify-full`: the certificate must chain to `sslrootcert` (a PEM
    /// file) or, without one, to the web's public roots, and name the host.
    Verify { root_file: Option<String> },
}

/// Rewrites the URL's options that tokio-postgres reads otherwise than libpq: splits off
/// the TLS options it does not know (`sslmode=verify-*`, `sslrootcert`), and spells
/// `host=h1,h2` (one host named "h1,h2" to it) as `host=h1&host=h2`. Answers the URL it
/// parses and the check to make.
fn driver_url(url: &str) -> (String, CertificateCheck) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), CertificateCheck::None) };
    let (mut verify, mut root_file, mut kept) = (false, None, Vec::new());
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                verify = true;
                kept.push("sslmode=require".to_string());
            }
            Some(("sslrootcert", path)) => {
                root_file = Some(percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned());
            }
            Some(("host", hosts)) => kept.extend(hosts.split(',').map(|host| format!("host={host}"))),
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    let check = if verify || root_file.is_some() { CertificateCheck::Verify { root_file } } else { CertificateCheck::None };
    (url, check)
}

/// The TLS connector, used when `sslmode` allows TLS.
fn tls(check: &CertificateCheck) -> Result<MakeRustlsConnect, StorageError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::Pool(format!("TLS setup failed: {e}")))?;
    let config = match check {
        CertificateCheck::None => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth()
        }
        CertificateCheck::Verify { root_file } => {
            let mut roots = rustls::RootCertStore::empty();
            match root_file {
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                Some(path) => {
                    use rustls::pki_types::pem::PemObject;
                    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
                        .map_err(|e| StorageError::Pool(format!("sslrootcert {path}: {e}")))?;
                    for certificate in certificates {
                        let certificate = certificate.map_err(|e| StorageError::Pool(format!("sslrootcert {path}: {e}")))?;
                        roots.add(certificate).map_err(|e| StorageError::Pool(format!("sslrootcert {path}: {e}")))?;
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts the server's certificate without checking who issued it (libpq's `require`),
/// while still checking that the server holds its key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An error with its causes: a failed connection says only "error performing TLS
/// handshake" or "error connecting to server" without them.
fn with_causes(error: &dyn std::error::Error) -> String {
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

/// The phones of a JSON array of strings, as the service writes them.
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

/// A [`Profile`] from a row of `u.address, u.uid, u.name, u.status, u.photo, u.ts, u.thumbnail`.
fn profile_from_row(row: &Row) -> Result<Profile, tokio_postgres::Error> {
    Ok(Profile {
        address: row.try_get(0)?,
        uid: row.try_get(1)?,
        name: row.try_get(2)?,
        status: row.try_get(3)?,
        photo: row.try_get(4)?,
        ts: row.try_get(5)?,
        thumbnail: row.try_get(6)?,
    })
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
/// Statements are prepared before they are sent together, since a statement sent after
/// a COMMIT in the same batch would run outside the transaction. Dropped open (an early
/// return, an error, a cancelled request), it is rolled back, like tokio-postgres's own.
struct Pipelined {
    client: Object,
    open: bool,
}

impl Pipelined {
    /// BEGIN, then `sql`, on `client`: its row, if any.
    async fn begin_with(client: Object, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(Pipelined, Option<Row>), StorageError> {
        let statement = client.prepare_cached(sql).await?;
        let tx = Pipelined { client, open: true };
        count_statements(2);
        // Requests are sent in the order they are first polled, and `join` polls in order.
        let (begun, row) = futures_util::future::join(tx.client.batch_execute("BEGIN"), tx.client.query_opt(&statement, params)).await;
        begun?;
        let row = row?;
        Ok((tx, row))
    }

    /// `sql`, then COMMIT: the statement's row count.
    async fn execute_and_commit(mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StorageError> {
        let statement = self.client.prepare_cached(sql).await?;
        let client = self.finish();
        with_commit(client, client.execute(&statement, params)).await
    }

    /// `sql`, then COMMIT: the statement's row, if any.
    async fn query_opt_and_commit(mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StorageError> {
        let statement = self.client.prepare_cached(sql).await?;
        let client = self.finish();
        with_commit(client, client.query_opt(&statement, params)).await
    }

    /// `sql`, then COMMIT: the statement's one row.
    async fn query_one_and_commit(mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StorageError> {
        let statement = self.client.prepare_cached(sql).await?;
        let client = self.finish();
        with_commit(client, client.query_one(&statement, params)).await
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

// Each statement is prepared once per connection, through deadpool's statement cache.

/// Serialises, on every instance, a transaction that makes a row refer to stored file
/// `name` with one that deletes the file unless a row refers to it (see
/// `store::files`); no lock for no file.
async fn lock_file(tx: &impl GenericClient, name: &str) -> Result<(), StorageError> {
    if !name.is_empty() {
        execute(tx, "SELECT pg_advisory_xact_lock(hashtextextended('file:' || $1, 0))", &[&name]).await?;
    }
    Ok(())
}

impl PgStore {
    /// Records that stored file `name` is a chat attachment (see `store::files`).
    pub async fn keep_attachment(&self, name: &str) -> Result<(), StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.keep_attachment_once(client, name)).await
    }

    async fn keep_attachment_once(&self, mut client: Object, name: &str) -> Result<(), StorageError> {
        let inserted = execute(&client, "INSERT INTO attachment_files (name) VALUES ($1) ON CONFLICT DO NOTHING", &[&name]).await?;
        if inserted == 0 {
            // Listed before: no removal can have found it unreferenced since. Identical
            // uploads at once thus do not queue on one lock, each holding a connection.
            return Ok(());
        }
        // A removal that checked before the insert may still be deleting the file: waiting
        // for its lock makes the caller's restore of the file come after it.
        let tx = client.transaction().await?;
        lock_file(&tx, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the stored file `name` at `path` unless a row refers to it (see `store::files`).
    pub async fn remove_file_unless_referenced(&self, name: &str, path: std::path::PathBuf) -> Result<bool, StorageError> {
        self.retrying(Retry::IfNotApplied, |client| self.remove_file_unless_referenced_once(client, name, path.clone())).await
    }

    async fn remove_file_unless_referenced_once(
        &self,
        mut client: Object,
        name: &str,
        path: std::path::PathBuf,
    ) -> Result<bool, StorageError> {
        let tx = client.transaction().await?;
        lock_file(&tx, name).await?;
        let referenced: bool = query_one(&tx, &files::REFERENCED.replace("?1", "$1"), &[&name]).await?.try_get(0)?;
        let removed = if referenced { false } else { files::remove_in_background(path).await? };
        tx.commit().await?;
        Ok(removed)
    }
}

async fn execute(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StorageError> {
    count_statements(1);
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, params).await?)
}

async fn query(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StorageError> {
    count_statements(1);
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

async fn query_one(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StorageError> {
    count_statements(1);
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_one(&statement, params).await?)
}

async fn query_opt(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StorageError> {
    count_statements(1);
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_opt(&statement, params).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::ServerKeys;
    use std::collections::HashSet;
    use std::future::Future;

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

    /// The database named in `server`, where the test databases are created from.
    fn server_database(server: &str) -> &str {
        let base = server.split('?').next().unwrap_or(server);
        let path = &base[base.find("://").map_or(0, |i| i + 3)..];
        path.split_once('/').map(|(_, name)| name).filter(|name| !name.is_empty()).unwrap_or("postgres")
    }

    fn admitted() -> Admission<Refusal> {
        Box::pin(std::future::ready(Ok(())))
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
        let sealed = courier::seal_message(&seal(), address, code, &format!("your code is {code}"), &otp_hash);
        match store.enqueue_message(challenge, (address.to_string(), "app".into(), sealed), now * 1000, admitted).await.unwrap() {
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
            let now = crate::store::now();
            let (_, otp_hash) = start(&store, "18005550001", "123456", now).await;
            let guesses: Vec<_> = (0..50)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move { store.claim_code(guess("18005550001", otp_hash), now, 5, 60, admitted).await.unwrap() })
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
            let wrong = store.claim_code(guess("18005550001", [0; 32]), now, 5, 60, admitted).await.unwrap();
            assert_eq!(wrong, VerifyOutcome::Wrong { left: 4 });
            let refuse = || -> Admission<Refusal> { Box::pin(std::future::ready(Err(Refusal::Wait(7)))) };
            let refused = store.claim_code(guess("18005550001", otp_hash), now, 5, 60, refuse).await.unwrap();
            assert_eq!(refused, VerifyOutcome::Refused(Refusal::Wait(7)));
            let claimed = store.claim_code(guess("18005550001", otp_hash), now, 5, 60, admitted).await.unwrap();
            assert_eq!(claimed, VerifyOutcome::Claimed { link_target: None });
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_senders_never_take_the_same_notice() {
        with_database("concurrent_senders_never_take_the_same_notice", |url| async move {
            let store = Arc::new(PgStore::connect(&url, PgSettings::with_pool_size(4), &phones()).await.unwrap());
            let now = crate::store::now();
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
            let now = crate::store::now();
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
            store.record_attempt(first.id, 1, AttemptOutcome::Sent, first.address.clone(), first.otp_hash.clone()).await.unwrap();
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

    /// A login start and a full login on warm connections (each statement already prepared):
    /// the statements they send, BEGIN and COMMIT included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_sends_few_statements() {
        with_database("a_login_sends_few_statements", |url| async move {
            let store = PgStore::connect(&url, PgSettings::with_pool_size(1), &phones()).await.unwrap();
            let now = crate::store::now();
            let full_login = |address: &'static str, token: &'static str| {
                let store = &store;
                async move {
                    let (id, otp_hash) = start(store, address, "123456", now).await;
                    store.record_attempt(id, 1, AttemptOutcome::Sent, address.into(), otp_hash.to_vec()).await.unwrap();
                    let started = STATEMENTS.with(|count| count.get());
                    let claimed = store.claim_code(guess(address, otp_hash), now, 5, 60, admitted).await.unwrap();
                    assert_eq!(claimed, VerifyOutcome::Claimed { link_target: None });
                    let login = CompletedLogin {
                        address: address.into(),
                        uid: "u1".into(),
                        name: "Ann".into(),
                        token_sha256: token.into(),
                        now,
                        appid: "app".into(),
                        device: "d1".into(),
                        now_ms: now * 1000,
                        expires_at: now + 3600,
                        max_devices: 1,
                    };
                    assert!(store.record_login(login, phones().hash(address), Some(otp_hash)).await.unwrap().first_login);
                    (started, STATEMENTS.with(|count| count.get()))
                }
            };
            // The first login prepares the statements on the pool's one connection.
            STATEMENTS.scope(std::cell::Cell::new(0), full_login("18005550001", "t1")).await;
            let (start, full) = STATEMENTS.scope(std::cell::Cell::new(0), full_login("18005550002", "t2")).await;
            // BEGIN with the lock and read, the writes with COMMIT; the delivery's record.
            assert_eq!(start, 5, "statements of a login start");
            // BEGIN with the locked read, the claim and the link lookup with COMMIT; the record.
            assert_eq!(full - start, 5, "statements of a verify");
            assert!(store.authenticate("t2".into(), now * 1000).await.unwrap().is_some());
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_login_authenticates_and_notifies_contacts() {
        with_database("a_recorded_login_authenticates_and_notifies_contacts", |url| async move {
            let store = PgStore::connect(&url, PgSettings::with_pool_size(2), &phones()).await.unwrap();
            let now = crate::store::now();
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
            let admit = |new: usize, after: usize| -> Admission<ApiError> {
                assert_eq!((new, after), (1, 1));
                Box::pin(std::future::ready(Ok(())))
            };
            assert_eq!(store.sync_contacts(query, vec![phones().hash("18005550002")], admit).await.unwrap().unwrap(), (vec![], false));
            let (_, bob_hash) = start(&store, "18005550002", "654321", now).await;
            let bob = store.record_login(login("18005550002", "t2", ""), phones().hash("18005550002"), Some(bob_hash)).await.unwrap();
            assert_eq!(bob.notified, 1);
            let query = SyncQuery { owner: caller.user_id, phones: None, since: 0, reset: false, after: None, now };
            let no_upload = |_: usize, _: usize| -> Admission<ApiError> { panic!("nothing was uploaded") };
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
            assert_eq!(store.change_profile(caller.user_id, change, now + 1).await.unwrap().status, "here");
            assert_eq!(store.remove_contacts(caller.user_id, vec![phones().hash("18005550002")]).await.unwrap(), 1);
            assert_eq!(store.end_sessions("t3".into(), true).await.unwrap(), 1);
            store.probe_write().await.unwrap();
            store.probe_write().await.unwrap();
        })
        .await;
    }
}
