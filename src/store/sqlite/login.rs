//! The login queries: storing a challenge, claiming its code, recording the login.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::guesses::{after_wrong_guess, judge, Challenge, Guess, Judgement, VerifyOutcome};
use crate::domain::otp;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::error::StorageError;
use crate::store::records::{contact_joined, CodeGuess, CompletedLogin, LoginRecord, NewChallenge, LOGIN};

use super::{admitted, atomically, audit, links, outbox, sessions, users, SqliteStore};

/// Seconds until the address may be sent a new code: `Some` while its previous code is
/// younger than `resend_secs`.
pub(in crate::store) fn resend_wait(conn: &Connection, c: &NewChallenge) -> rusqlite::Result<Option<u64>> {
    let previous: Option<i64> = conn
        .prepare_cached("SELECT created_at FROM otp_challenges WHERE address = ?1")?
        .query_row([&c.address], |r| r.get(0))
        .optional()?;
    Ok(previous.map(|created_at| created_at + c.resend_secs - c.now).filter(|&wait| wait > 0).map(|wait| wait as u64))
}

/// Stores a challenge, replacing the address's previous one (check [`resend_wait`] first).
pub(in crate::store) fn store_challenge(conn: &Connection, c: &NewChallenge) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO otp_challenges (address, appid, otp_hash, created_at, expires_at, attempts, claimed_at, challenge_sha256, bound_attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, NULL, ?6, 0)",
    )?
    .execute(params![c.address, c.appid, &c.otp_hash[..], c.now, c.now + c.ttl_secs, &c.challenge_sha256[..]])?;
    Ok(())
}

/// Checks a guess and, when right, claims the challenge, all in one write transaction,
/// so two concurrent requests with the right code cannot both succeed. A claim older
/// than `claim_secs` was left by a process that died while exchanging the code (a live
/// one has finished or given the claim back by then): the code is free again.
///
/// A guess that sends the code's challenge id is counted apart from guesses without
/// one (`bound_attempts`), so guesses from someone who never saw the start reply cannot
/// use up the attempts of the one who did. `admit` (the per-address budgets) is asked,
/// with whether the guess is bound and its kind's wrong guesses so far, only for a guess
/// that could match a pending code.
pub fn check_and_claim(
    conn: &mut Connection,
    guess: &Guess,
    now: i64,
    max_attempts: u32,
    claim_secs: i64,
    admit: impl FnOnce(bool, u32) -> Result<(), Refusal>,
) -> rusqlite::Result<VerifyOutcome> {
    let address = guess.address;
    atomically(conn, |tx| {
        let row = tx
            .prepare_cached(
                "SELECT appid, otp_hash, expires_at, attempts, claimed_at, challenge_sha256, bound_attempts FROM otp_challenges WHERE address = ?1",
            )?
            .query_row([address], |r| {
                Ok(Challenge {
                    appid: r.get(0)?,
                    otp_hash: r.get(1)?,
                    expires_at: r.get(2)?,
                    attempts: r.get(3)?,
                    claimed_at: r.get(4)?,
                    challenge_sha256: r.get(5)?,
                    bound_attempts: r.get(6)?,
                })
            })
            .optional()?;
        let (bound, attempts) = match judge(row.as_ref(), guess, now, max_attempts, claim_secs) {
            Judgement::Answer(outcome) => return Ok(outcome),
            Judgement::Compare { bound, attempts } => (bound, attempts),
        };
        if let Err(refusal) = admit(bound, attempts) {
            return Ok(VerifyOutcome::Refused(refusal));
        }
        if row.as_ref().is_some_and(|challenge| otp::same(&challenge.otp_hash, guess.otp_hash)) {
            tx.prepare_cached("UPDATE otp_challenges SET claimed_at = ?2 WHERE address = ?1")?.execute(params![address, now])?;
            let link_target = links::holder(tx, address)?.map(|(_, own)| own);
            return Ok(VerifyOutcome::Claimed { link_target });
        }
        let count_it = if bound {
            "UPDATE otp_challenges SET bound_attempts = bound_attempts + 1 WHERE address = ?1"
        } else {
            "UPDATE otp_challenges SET attempts = attempts + 1 WHERE address = ?1"
        };
        tx.prepare_cached(count_it)?.execute([address])?;
        Ok(after_wrong_guess(max_attempts, attempts))
    })
}

/// Removes the challenge only if it is still the one with this hash (a newer one stays).
pub(in crate::store) fn remove_challenge(conn: &Connection, address: &str, otp_hash: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM otp_challenges WHERE address = ?1 AND otp_hash = ?2")?.execute(params![address, otp_hash])?;
    Ok(())
}

/// Gives a claimed challenge back after the upstream call failed, so the same code works again.
pub(in crate::store) fn release_claim(conn: &mut Connection, address: &str, otp_hash: &[u8; 32]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE otp_challenges SET claimed_at = NULL WHERE address = ?1 AND otp_hash = ?2")?
        .execute(params![address, &otp_hash[..]])?;
    Ok(())
}

/// Records the user and the session, queues joined notices for a first phone login,
/// and consumes the code that proved the address, all in one transaction.
pub(in crate::store) fn complete_login(
    conn: &mut Connection,
    login: &CompletedLogin,
    address_hash: i64,
    claimed_code: Option<&[u8; 32]>,
) -> rusqlite::Result<LoginRecord> {
    atomically(conn, |tx| {
        // A linked address logs its user in; the platform's id of the address is kept for its userdel.
        let linked: Option<i64> = tx
            .prepare_cached("UPDATE linked_addresses SET uid = ?2 WHERE address = ?1 RETURNING user_id")?
            .query_row([&login.address, &login.uid], |r| r.get(0))
            .optional()?;
        let (user_id, first_login, profile) = match linked {
            Some(user_id) => (user_id, false, users::update_at_login(tx, user_id, None, &login.name, login.now)?),
            None => users::upsert_at_login(tx, &login.address, address_hash, &login.uid, &login.name, login.now)?,
        };
        let mut record = LoginRecord { first_login, profile, ..LoginRecord::default() };
        if first_login && crate::domain::address::is_phone(&login.address) {
            let joined = || contact_joined(&login.address, &login.name, login.now).payload();
            record.notified = outbox::enqueue_for_contact_holders(tx, user_id, joined, login.now)?;
        }
        let session = sessions::NewSession {
            user_id,
            token_sha256: &login.token_sha256,
            appid: &login.appid,
            device: &login.device,
            now_ms: login.now_ms,
            expires_at: login.expires_at,
            via: if linked.is_some() { &login.address } else { "" },
        };
        if first_login {
            // A new user id has no sessions yet: nothing to replace, expire or evict.
            sessions::insert_row(tx, &session)?;
        } else {
            record.evicted = sessions::insert(tx, &session, login.max_devices)?;
        }
        if let Some(otp_hash) = claimed_code {
            remove_challenge(tx, &login.address, otp_hash)?;
        }
        audit::record(tx, address_hash, LOGIN, &login.appid, login.now)?;
        Ok(record)
    })
}

impl SqliteStore {
    /// Deletes the codes and sessions that expired before `now`; returns how many of each.
    pub async fn purge_expired(&self, now: i64) -> Result<(usize, usize), StorageError> {
        self.call(move |conn| {
            let codes = conn.prepare_cached("DELETE FROM otp_challenges WHERE expires_at <= ?1")?.execute([now])?;
            Ok((codes, sessions::purge_expired(conn, now)?))
        })
        .await
    }

    /// Checks a guess at a pending code and claims the code when it is right (see [`check_and_claim`]).
    pub async fn claim_code(
        &self,
        guess: CodeGuess,
        now: i64,
        max_attempts: u32,
        claim_secs: i64,
        admit: impl FnOnce(bool, u32) -> Admission<Refusal> + Send + 'static,
    ) -> Result<VerifyOutcome, StorageError> {
        let runtime = tokio::runtime::Handle::current();
        self.call(move |conn| {
            let borrowed =
                Guess { address: &guess.address, appid: &guess.appid, otp_hash: &guess.otp_hash, challenge_sha256: guess.challenge_sha256 };
            check_and_claim(conn, &borrowed, now, max_attempts, claim_secs, |bound, attempts| admitted(&runtime, admit(bound, attempts)))
        })
        .await
    }

    /// Gives a claimed code back (see [`release_claim`]).
    pub async fn release_code(&self, address: String, otp_hash: [u8; 32]) -> Result<(), StorageError> {
        self.call(move |conn| release_claim(conn, &address, &otp_hash)).await
    }

    /// Records a completed login (see [`complete_login`]); `address_hash` is the address's
    /// phone hash. `claimed_code` is the code that proved the address, if one did.
    pub async fn record_login(
        &self,
        login: CompletedLogin,
        address_hash: i64,
        claimed_code: Option<[u8; 32]>,
    ) -> Result<LoginRecord, StorageError> {
        self.call(move |conn| complete_login(conn, &login, address_hash, claimed_code.as_ref())).await
    }
}
