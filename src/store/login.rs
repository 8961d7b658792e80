//! The login: a guess at a pending code claims it, and a proven address becomes a user
//! with a session, each in one transaction.

use crate::domain::guesses::VerifyOutcome;
use crate::domain::ratelimit::{Admission, Refusal};
use crate::store::{CodeGuess, CompletedLogin, Db, LoginRecord, StorageError};

impl Db {
    /// Deletes the codes and sessions that expired before `now`; returns how many of each.
    pub async fn purge_expired(&self, now: i64) -> Result<(usize, usize), StorageError> {
        dispatch!(self, |store| store.purge_expired(now))
    }

    /// Checks a guess at a pending code and, when right, claims the code, so of concurrent
    /// right guesses exactly one succeeds. A claim older than `claim_secs` was left by a
    /// process that died while exchanging the code: the code is free again. `admit` (the
    /// per-address budget) is spent only by a guess without challenge id that could match.
    pub async fn claim_code(
        &self,
        guess: CodeGuess,
        now: i64,
        max_attempts: u32,
        claim_secs: i64,
        admit: impl FnOnce(bool, u32) -> Admission<Refusal> + Send + 'static,
    ) -> Result<VerifyOutcome, StorageError> {
        dispatch!(self, |store| store.claim_code(guess, now, max_attempts, claim_secs, admit))
    }

    /// Gives a claimed code back after the upstream call failed, so the same code works
    /// again; a newer code for the address stays as it is.
    pub async fn release_code(&self, address: String, otp_hash: [u8; 32]) -> Result<(), StorageError> {
        dispatch!(self, |store| store.release_code(address, otp_hash))
    }

    /// Records the user and the session, queues joined notices for a first phone login,
    /// and consumes the code that proved the address (`claimed_code`, if one did), all in
    /// one transaction.
    pub async fn record_login(&self, login: CompletedLogin, claimed_code: Option<[u8; 32]>) -> Result<LoginRecord, StorageError> {
        let address_hash = self.phone_hash(&login.address);
        dispatch!(self, |store| store.record_login(login, address_hash, claimed_code))
    }
}
