//! SQLite storage: a small connection pool whose blocking calls run on the
//! blocking thread pool, and the queries of the login flow.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::otp;

const SCHEMA: &str = include_str!("../schema.sql");

pub struct Db {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

#[derive(Debug)]
pub struct StorageError(pub String);

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError(e.to_string())
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Db {
    /// Opens `size` connections to the database file (created if missing) and applies the schema.
    pub fn open(path: &str, size: usize) -> Result<Arc<Db>, StorageError> {
        let mut connections = Vec::with_capacity(size);
        for _ in 0..size.max(1) {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            // WAL lets readers run beside the writer; NORMAL sync is durable in WAL mode
            // except for the last transactions on power loss, and avoids an fsync per request.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            connections.push(conn);
        }
        connections[0].execute_batch(SCHEMA)?;
        Ok(Arc::new(Db { idle: Mutex::new(connections), returned: Condvar::new() }))
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn call<R, F>(self: &Arc<Self>, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let db = Arc::clone(self);
        tokio::task::spawn_blocking(move || db.blocking(f)).await.map_err(|e| StorageError(format!("database task failed: {e}")))?
    }

    /// Runs `f` with a pooled connection on this thread, waiting for one to be free.
    pub fn blocking<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error>) -> Result<R, StorageError> {
        let mut conn = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match idle.pop() {
                    Some(conn) => break conn,
                    None => idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        let result = f(&mut conn);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        self.returned.notify_one();
        Ok(result?)
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Returns the value stored under `key`, storing `make()` first if there is none.
pub fn setting_or_insert(conn: &mut Connection, key: &str, make: impl FnOnce() -> Vec<u8>) -> rusqlite::Result<Vec<u8>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<Vec<u8>> = tx.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?;
    let value = match existing {
        Some(value) => value,
        None => {
            let value = make();
            tx.execute("INSERT INTO settings (key, value) VALUES (?1, ?2)", params![key, value])?;
            value
        }
    };
    tx.commit()?;
    Ok(value)
}

pub struct NewChallenge {
    pub address: String,
    pub appid: String,
    pub otp_hash: [u8; 32],
    pub now: i64,
    pub ttl_secs: i64,
    pub resend_secs: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    /// The previous code was sent too recently; retry after this many seconds.
    TooSoon(u64),
}

/// Stores a challenge, replacing the address's previous one unless that was created
/// less than `resend_secs` ago.
pub fn store_challenge(conn: &mut Connection, c: &NewChallenge) -> rusqlite::Result<StoreOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcome = insert_challenge(&tx, c)?;
    tx.commit()?;
    Ok(outcome)
}

/// [`store_challenge`] inside the caller's transaction (which commits, or rolls back on `TooSoon`).
pub fn insert_challenge(tx: &rusqlite::Transaction<'_>, c: &NewChallenge) -> rusqlite::Result<StoreOutcome> {
    let previous: Option<i64> =
        tx.query_row("SELECT created_at FROM otp_challenges WHERE address = ?1", [&c.address], |r| r.get(0)).optional()?;
    if let Some(created_at) = previous {
        let wait = created_at + c.resend_secs - c.now;
        if wait > 0 {
            return Ok(StoreOutcome::TooSoon(wait as u64));
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO otp_challenges (address, appid, otp_hash, created_at, expires_at, attempts, claimed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, NULL)",
        params![c.address, c.appid, &c.otp_hash[..], c.now, c.now + c.ttl_secs],
    )?;
    Ok(StoreOutcome::Stored)
}

/// Removes the challenge only if it is still the one with this hash (a newer one stays).
pub fn remove_challenge(conn: &mut Connection, address: &str, otp_hash: &[u8; 32]) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM otp_challenges WHERE address = ?1 AND otp_hash = ?2", params![address, &otp_hash[..]])?;
    Ok(())
}

struct Challenge {
    appid: String,
    otp_hash: Vec<u8>,
    expires_at: i64,
    attempts: u32,
    claimed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code was right; the challenge is claimed so no concurrent request can use it.
    Claimed,
    /// No usable challenge: never issued, expired, used, or claimed by another request.
    NoCode,
    /// Wrong code; this many guesses remain.
    Wrong { left: u32 },
    /// Too many wrong guesses; the challenge is dead.
    TooManyAttempts,
}

/// Checks a guess and, when right, claims the challenge, all in one write transaction,
/// so two concurrent requests with the right code cannot both succeed.
pub fn check_and_claim(
    conn: &mut Connection,
    address: &str,
    appid: &str,
    guess_hash: &[u8; 32],
    now: i64,
    max_attempts: u32,
) -> rusqlite::Result<VerifyOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = tx
        .query_row("SELECT appid, otp_hash, expires_at, attempts, claimed_at FROM otp_challenges WHERE address = ?1", [address], |r| {
            Ok(Challenge {
                appid: r.get(0)?,
                otp_hash: r.get(1)?,
                expires_at: r.get(2)?,
                attempts: r.get(3)?,
                claimed: r.get::<_, Option<i64>>(4)?.is_some(),
            })
        })
        .optional()?;
    let Some(challenge) = row else {
        return Ok(VerifyOutcome::NoCode);
    };
    if challenge.expires_at <= now || challenge.claimed || challenge.appid != appid {
        return Ok(VerifyOutcome::NoCode);
    }
    let attempts = challenge.attempts;
    if attempts >= max_attempts {
        return Ok(VerifyOutcome::TooManyAttempts);
    }
    let outcome = if otp::same(&challenge.otp_hash, guess_hash) {
        tx.execute("UPDATE otp_challenges SET claimed_at = ?2 WHERE address = ?1", params![address, now])?;
        VerifyOutcome::Claimed
    } else {
        tx.execute("UPDATE otp_challenges SET attempts = attempts + 1 WHERE address = ?1", [address])?;
        match max_attempts - attempts - 1 {
            0 => VerifyOutcome::TooManyAttempts,
            left => VerifyOutcome::Wrong { left },
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Gives a claimed challenge back after the upstream call failed, so the same code works again.
pub fn release_claim(conn: &mut Connection, address: &str, otp_hash: &[u8; 32]) -> rusqlite::Result<()> {
    conn.execute("UPDATE otp_challenges SET claimed_at = NULL WHERE address = ?1 AND otp_hash = ?2", params![address, &otp_hash[..]])?;
    Ok(())
}

pub struct CompletedLogin {
    pub address: String,
    pub uid: String,
    pub name: String,
    pub token_sha256: String,
    pub now: i64,
}

/// Records the user and consumes the challenge in one transaction.
pub fn complete_login(conn: &mut Connection, login: &CompletedLogin, otp_hash: &[u8; 32]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO users (address, uid, name, created_at, last_login, token_sha256) VALUES (?1, ?2, ?3, ?4, ?4, ?5)
         ON CONFLICT (address) DO UPDATE SET uid = excluded.uid,
             name = CASE WHEN excluded.name = '' THEN users.name ELSE excluded.name END,
             last_login = excluded.last_login, token_sha256 = excluded.token_sha256",
        params![login.address, login.uid, login.name, login.now, login.token_sha256],
    )?;
    tx.execute("DELETE FROM otp_challenges WHERE address = ?1 AND otp_hash = ?2", params![login.address, &otp_hash[..]])?;
    tx.commit()
}

/// Deletes challenges that expired before `now`; returns how many.
pub fn purge_expired(conn: &mut Connection, now: i64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM otp_challenges WHERE expires_at <= ?1", [now])
}

pub fn ping(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT count(*) FROM settings", [], |_| Ok(()))
}
