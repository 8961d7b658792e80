//! How a guess at a pending code is judged: the same rules on every backend, which
//! only read the challenge and write what the rules answer.

use crate::domain::otp;
use crate::domain::ratelimit::Refusal;

/// A pending code as stored, as a guess at it is judged.
pub struct Challenge {
    pub appid: String,
    pub otp_hash: Vec<u8>,
    pub expires_at: i64,
    pub attempts: u32,
    pub claimed_at: Option<i64>,
    pub challenge_sha256: Option<Vec<u8>>,
    pub bound_attempts: u32,
}

/// What a guess meets before its code is compared (the same rules on every backend).
pub enum Judgement {
    /// Answered without comparing the code; nothing is written.
    Answer(VerifyOutcome),
    /// Compare it: `bound` when it sent the code's challenge id (its wrong guesses are
    /// counted apart and spend no per-address budget), `attempts` wrong guesses so far.
    Compare { bound: bool, attempts: u32 },
}

/// Judges a guess against the stored challenge, before its code is compared (each
/// backend reads the challenge under a lock, then compares and writes what this says).
pub fn judge(challenge: Option<&Challenge>, guess: &Guess, now: i64, max_attempts: u32, claim_secs: i64) -> Judgement {
    let Some(challenge) = challenge else {
        return Judgement::Answer(VerifyOutcome::NoCode);
    };
    let claimed = challenge.claimed_at.is_some_and(|at| at + claim_secs > now);
    if challenge.expires_at <= now || claimed || challenge.appid != guess.appid {
        return Judgement::Answer(VerifyOutcome::NoCode);
    }
    let bound = match (&guess.challenge_sha256, &challenge.challenge_sha256) {
        (None, _) => false,
        (Some(sent), Some(stored)) if otp::same(sent, stored) => true,
        (Some(_), _) => return Judgement::Answer(VerifyOutcome::NoCode),
    };
    let attempts = if bound { challenge.bound_attempts } else { challenge.attempts };
    if attempts >= max_attempts {
        return Judgement::Answer(VerifyOutcome::TooManyAttempts);
    }
    Judgement::Compare { bound, attempts }
}

/// The answer to a wrong guess, the `attempts + 1`-th of at most `max_attempts`.
pub fn after_wrong_guess(max_attempts: u32, attempts: u32) -> VerifyOutcome {
    match max_attempts - attempts - 1 {
        0 => VerifyOutcome::TooManyAttempts,
        left => VerifyOutcome::Wrong { left },
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code was right; the challenge is claimed so no concurrent request can use it.
    /// `link_target` is the own address of the user the address is linked to, if it is:
    /// the login that follows needs it, and it is read in the claim's transaction.
    Claimed { link_target: Option<String> },
    /// No code this guess could match: never issued, expired, used, claimed by another
    /// request, asked for by another app, or bound to another challenge id. Nothing was spent.
    NoCode,
    /// Wrong code; this many guesses remain.
    Wrong { left: u32 },
    /// Too many wrong guesses; the challenge is dead.
    TooManyAttempts,
    /// `admit` refused the guess. Nothing was evaluated.
    Refused(Refusal),
}

/// A guess at the pending code of `address`.
pub struct Guess<'a> {
    pub address: &'a str,
    pub appid: &'a str,
    pub otp_hash: &'a [u8; 32],
    /// SHA-256 of the challenge id the client sent back, if it sent one.
    pub challenge_sha256: Option<[u8; 32]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Challenge {
        Challenge {
            appid: "app".into(),
            otp_hash: vec![1; 32],
            expires_at: 100,
            attempts: 0,
            claimed_at: None,
            challenge_sha256: Some(vec![7; 32]),
            bound_attempts: 0,
        }
    }

    fn guess(appid: &str, challenge_sha256: Option<[u8; 32]>) -> Guess<'_> {
        Guess { address: "18005550001", appid, otp_hash: &[1; 32], challenge_sha256 }
    }

    fn answer(judged: Judgement) -> Option<VerifyOutcome> {
        match judged {
            Judgement::Answer(outcome) => Some(outcome),
            Judgement::Compare { .. } => None,
        }
    }

    #[test]
    fn a_guess_no_code_could_match_is_answered_without_comparing() {
        let challenge = pending();
        assert_eq!(answer(judge(None, &guess("app", None), 50, 5, 60)), Some(VerifyOutcome::NoCode));
        assert_eq!(answer(judge(Some(&challenge), &guess("app", None), 100, 5, 60)), Some(VerifyOutcome::NoCode), "expired");
        assert_eq!(answer(judge(Some(&challenge), &guess("other", None), 50, 5, 60)), Some(VerifyOutcome::NoCode), "another app's");
        assert_eq!(answer(judge(Some(&challenge), &guess("app", Some([8; 32])), 50, 5, 60)), Some(VerifyOutcome::NoCode), "another id");
        let claimed = Challenge { claimed_at: Some(40), ..pending() };
        assert_eq!(answer(judge(Some(&claimed), &guess("app", None), 50, 5, 60)), Some(VerifyOutcome::NoCode), "claimed");
        // A claim older than claim_secs was left by a process that died: the code is free.
        assert!(matches!(judge(Some(&claimed), &guess("app", None), 50, 5, 10), Judgement::Compare { bound: false, attempts: 0 }));
    }

    #[test]
    fn guesses_with_the_challenge_id_are_counted_apart() {
        let spent = Challenge { attempts: 5, bound_attempts: 2, ..pending() };
        assert_eq!(answer(judge(Some(&spent), &guess("app", None), 50, 5, 60)), Some(VerifyOutcome::TooManyAttempts));
        assert!(matches!(judge(Some(&spent), &guess("app", Some([7; 32])), 50, 5, 60), Judgement::Compare { bound: true, attempts: 2 }));
    }

    #[test]
    fn the_last_wrong_guess_ends_the_code() {
        assert_eq!(after_wrong_guess(5, 0), VerifyOutcome::Wrong { left: 4 });
        assert_eq!(after_wrong_guess(5, 3), VerifyOutcome::Wrong { left: 1 });
        assert_eq!(after_wrong_guess(5, 4), VerifyOutcome::TooManyAttempts);
    }
}
