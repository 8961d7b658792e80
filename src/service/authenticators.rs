//! The ways a user proves an address: a one-time code sent to a phone or an e-mail
//! address ([`crate::service::codes`]), or an ID token from a sign-in provider. A login,
//! linking a second address and deleting an account each take a [`Proof`] from whichever
//! authenticator the request's fields call for, and never look further into it.

use async_trait::async_trait;
use std::sync::Arc;

use crate::delivery::oidc::IdTokenVerifier;
use crate::domain::address::Address;
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::ratelimit::Limits;
use crate::service::non_empty;

/// The fields of a request that may prove an address, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProofFields<'a> {
    pub phone: Option<&'a str>,
    pub email: Option<&'a str>,
    /// A one-time code, and the challenge id of the start reply that sent it.
    pub code: Option<&'a str>,
    pub challenge: Option<&'a str>,
    /// A sign-in provider's name, its ID token, and the nonce the app asked it to embed.
    pub provider: Option<&'a str>,
    pub id_token: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

impl ProofFields<'_> {
    /// Whether the fields carry an ID token (or name a provider, which asks for one).
    pub fn has_id_token(&self) -> bool {
        non_empty(self.id_token).is_some() || non_empty(self.provider).is_some()
    }
}

/// An address proven by an authenticator.
#[derive(Debug)]
pub struct Proof {
    pub address: Address,
    /// The phone's country calling code; `None` for other addresses.
    pub calling_code: Option<u16>,
    /// The hash of a code claimed as this proof: whatever the proof is for consumes it
    /// in its own transaction, or gives it back when it fails, so a retry works.
    pub claimed_code: Option<[u8; 32]>,
    pub made: ProofTime,
    pub link_lookup: LinkLookup,
}

/// Whether proving the address looked up the user it is linked to, on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLookup {
    NotDone,
    /// The own address of the user it is linked to; `None` when it is linked to no one.
    Done(Option<String>),
}

/// When a proof was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofTime {
    /// As it was checked: a code proves the address when it is sent in, within its short life.
    Now,
    /// At these unix seconds: an ID token's `iat`. The token may sign in until it expires.
    At(i64),
    /// Not said: an ID token without `iat`.
    Unknown,
}

impl Proof {
    /// Refuses a proof made more than `max_age_secs` before `now`, or at a time it does not
    /// say, for what a stolen ID token must not do within its lifetime.
    pub fn require_fresh(&self, now: i64, max_age_secs: i64) -> Result<(), ApiError> {
        match self.made {
            ProofTime::Now => Ok(()),
            ProofTime::At(issued_at) if now - issued_at <= max_age_secs => Ok(()),
            ProofTime::At(_) => Err(ApiError::new(
                ErrorCode::BadIdToken,
                format!(
                    "the ID token is not fresh: it was issued more than {} minutes ago; sign in with the provider again",
                    max_age_secs / 60
                ),
            )),
            ProofTime::Unknown => {
                Err(ApiError::new(ErrorCode::BadIdToken, "the ID token is not fresh: it does not say when it was issued (no iat claim)"))
            }
        }
    }
}

/// A way to prove an address.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Checks the proof in `fields`, made for `appid`; `known` is the address to prove
    /// when the fields name none (a signed-in user proving their own address again).
    async fn prove(&self, appid: &str, fields: &ProofFields<'_>, known: Option<&Address>, client_ip: &str) -> Result<Proof, ApiError>;
}

/// Sign-in with an ID token from one of the providers in `OIDC_PROVIDERS`.
pub struct IdTokenAuthenticator {
    verifier: IdTokenVerifier,
    limits: Arc<Limits>,
}

impl IdTokenAuthenticator {
    pub fn new(verifier: IdTokenVerifier, limits: Arc<Limits>) -> Self {
        IdTokenAuthenticator { verifier, limits }
    }
}

#[async_trait]
impl Authenticator for IdTokenAuthenticator {
    async fn prove(&self, _appid: &str, fields: &ProofFields<'_>, _known: Option<&Address>, client_ip: &str) -> Result<Proof, ApiError> {
        let provider = non_empty(fields.provider).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadParam,
                format!("provider is required with id_token: one of {}", self.verifier.provider_names().join(", ")),
            )
        })?;
        let id_token =
            non_empty(fields.id_token).ok_or_else(|| ApiError::new(ErrorCode::BadParam, "id_token is required with provider"))?;
        // Each check verifies a signature and may fetch the issuer's keys.
        self.limits.verify_per_ip.check(client_ip).await?;
        let identity = self.verifier.verify(provider, id_token, non_empty(fields.nonce)).await?;
        let made = identity.issued_at.map_or(ProofTime::Unknown, ProofTime::At);
        Ok(Proof { address: identity.address, calling_code: None, claimed_code: None, made, link_lookup: LinkLookup::NotDone })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recent_proof_is_fresh() {
        let proof = |made| Proof {
            address: Address::Account("corp:1".into()),
            calling_code: None,
            claimed_code: None,
            made,
            link_lookup: LinkLookup::NotDone,
        };
        assert!(proof(ProofTime::Now).require_fresh(1_000, 300).is_ok());
        assert!(proof(ProofTime::At(700)).require_fresh(1_000, 300).is_ok(), "five minutes old is fresh still");
        let stale = proof(ProofTime::At(699)).require_fresh(1_000, 300).unwrap_err();
        assert_eq!(stale.code, ErrorCode::BadIdToken);
        assert!(stale.message.contains("not fresh") && stale.message.contains("5 minutes"), "{}", stale.message);
        assert_eq!(proof(ProofTime::Unknown).require_fresh(1_000, 300).unwrap_err().code, ErrorCode::BadIdToken);
    }
}
