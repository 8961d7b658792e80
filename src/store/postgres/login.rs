//! The login queries: purging expired codes, claiming a code, recording a login.

use crate::domain::account::{Evicted, OwnProfile};
use crate::domain::guesses::{after_wrong_guess, judge, Challenge, Guess, Judgement, VerifyOutcome};
use crate::domain::otp;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::error::StorageError;
use crate::store::records::{contact_joined, CodeGuess, CompletedLogin, LoginRecord, LOGIN};

use super::{counter, execute, query_one, rows, PgStore, Retry};

impl PgStore {
    /// Deletes the codes and sessions that expired before `now`; returns how many of each.
    /// Rows another transaction holds are left for the next round, so purges running on
    /// every instance never wait for each other or for a login.
    pub async fn purge_expired(&self, now: i64) -> Result<(usize, usize), StorageError> {
        self.retrying(Retry::Always, |client| async move {
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
        })
        .await
    }

    /// Checks a guess at a pending code and claims the code when it is right, like
    /// the SQLite store's `check_and_claim`. The challenge row stays locked
    /// from the read to the commit, so of concurrent right guesses exactly one claims it.
    pub async fn claim_code(
        &self,
        guess: CodeGuess,
        now: i64,
        max_attempts: u32,
        claim_secs: i64,
        admit: impl FnOnce(bool, u32) -> Admission<Refusal> + Send + 'static,
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
        if let Err(refusal) = admit(bound, attempts).await {
            return Ok(VerifyOutcome::Refused(refusal));
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
    /// again; a newer code for the address stays as it is. Through a failover it is tried
    /// again for up to the query timeout, as recording a login is: a code not given back
    /// stays claimed until its claim times out, and the user's retry is refused meanwhile.
    /// Running it twice is safe.
    pub async fn release_code(&self, address: String, otp_hash: [u8; 32]) -> Result<(), StorageError> {
        let (address, hash): (&str, &[u8]) = (&address, &otp_hash);
        self.persisting("giving the code back", |client| async move {
            execute(&client, "UPDATE otp_challenges SET claimed_at = NULL WHERE address = $1 AND otp_hash = $2", &[&address, &hash])
                .await?;
            Ok(())
        })
        .await
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
        let joined =
            crate::domain::address::is_phone(&login.address).then(|| contact_joined(&login.address, &login.name, login.now).payload());
        let max_devices = i64::try_from(login.max_devices).unwrap_or(i64::MAX);
        let consumed: Option<&[u8]> = claimed_code.as_ref().map(|hash| &hash[..]);
        let (login, joined) = (&login, &joined);
        // Upstream has issued the token already: unrecorded, it is lost and the user starts
        // over. Through a failover the login is tried again, on fresh connections, for up to
        // the query timeout after the first failure, long enough for a standby to take over.
        // Running it twice is safe: the session is keyed by its token, a first login is one
        // only once, and the code is consumed once (only the audit event may be written twice).
        self.persisting("recording the login", |client| async move {
            let row = query_one(
                &client,
                "SELECT * FROM otpgate_record_login($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &login.address,
                    &login.uid,
                    &login.name,
                    &login.now,
                    &address_hash,
                    joined,
                    &login.token_sha256,
                    &login.appid,
                    &login.device,
                    &login.now_ms,
                    &login.expires_at,
                    &max_devices,
                    &consumed,
                    &LOGIN,
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
        })
        .await
    }
}
