//! Sign-in with an OpenID Connect ID token ("Sign in with Google", "Sign in with Apple",
//! or any issuer the operator configures in `OIDC_PROVIDERS`). A token is accepted when
//! the issuer's published keys verify its signature (found through the issuer's discovery
//! document, cached, and fetched again when a token names a key not among them) and its
//! issuer, audience, authorized party, lifetime, nonce and e-mail verification hold.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};

use crate::config::{AddressClaim, Config, OidcProvider};
use crate::delivery::upstream::describe;
use crate::domain::address::{self, Address};
use crate::domain::clock::Clock;
use crate::domain::error::{ApiError, ErrorCode};

/// Clock skew tolerated between the issuer and this server.
const LEEWAY_SECS: i64 = 60;
/// A token naming an unknown key fetches the keys again at most this often, so that
/// made-up key ids cannot make the server hammer the issuer.
const MIN_REFRESH_SECS: i64 = 60;
/// Keys older than this are fetched again, so a key the issuer withdrew stops verifying.
const MAX_KEYS_AGE_SECS: i64 = 24 * 3600;
/// Without keys, a failed fetch is tried again after this long; sign-ins meanwhile are
/// answered at once instead of each waiting for an issuer that is down.
const RETRY_SECS: i64 = 10;
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
const MAX_SUBJECT_CHARS: usize = 255;

/// The algorithms of keys an issuer publishes; never `none` or a shared secret.
const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

struct Provider {
    name: String,
    issuer: String,
    /// `iss` values accepted: the issuer, and for Google the bare host its older tokens carry.
    accepted_issuers: Vec<String>,
    client_ids: Vec<String>,
    address_claim: AddressClaim,
    email_verified_if_absent: bool,
    keys: RwLock<KeyCache>,
    /// One fetch of the keys at a time; the others wait and use its result.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: Option<Keys>,
    /// Unix seconds of the last fetch, whether it succeeded or not.
    last_attempt: Option<i64>,
}

struct Keys {
    set: JwkSet,
    fetched_at: i64,
}

impl KeyCache {
    /// The answer for `kid` at `now` from what is cached, or `None` when the keys are to be
    /// fetched first: when they lack `kid` or are older than [`MAX_KEYS_AGE_SECS`], at most
    /// once per [`MIN_REFRESH_SECS`]; when there are none, at most once per [`RETRY_SECS`].
    fn answer(&self, kid: &str, now: i64) -> Option<Result<Option<Jwk>, ApiError>> {
        let fresh = self.keys.as_ref().filter(|keys| now - keys.fetched_at < MAX_KEYS_AGE_SECS);
        let found = fresh.and_then(|keys| keys.set.find(kid).cloned());
        if found.is_some() {
            return Some(Ok(found));
        }
        let wait = if self.keys.is_some() { MIN_REFRESH_SECS } else { RETRY_SECS };
        if self.last_attempt.is_none_or(|at| now - at >= wait) {
            return None;
        }
        Some(if fresh.is_some() { Ok(None) } else { Err(keys_unavailable()) })
    }
}

fn keys_unavailable() -> ApiError {
    ApiError::new(ErrorCode::IdProvider, "the sign-in provider's keys could not be fetched; please retry")
}

/// The address a verified ID token proves.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub provider: String,
    pub address: Address,
    /// When the issuer issued the token (`iat`, unix seconds), when it says.
    pub issued_at: Option<i64>,
}

/// Verifies ID tokens of the providers `OIDC_PROVIDERS` configures.
pub struct IdTokenVerifier {
    providers: HashMap<String, Arc<Provider>>,
    client: reqwest::Client,
    clock: Clock,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Required (see `required_spec_claims`).
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    /// A boolean, or the string "true"/"false" as Apple sends it.
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    nonce: Option<String>,
    /// The client the token was issued to, when the issuer names it.
    #[serde(default)]
    azp: Option<String>,
}

impl IdTokenVerifier {
    /// `None` when `OIDC_PROVIDERS` names none (it is checked at load).
    pub fn from_config(config: &Config, clock: Clock) -> Result<Option<IdTokenVerifier>, String> {
        if config.oidc.providers.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.provider.timeout_secs))
            .build()
            .map_err(|e| format!("cannot build the OpenID Connect HTTP client: {e}"))?;
        let providers =
            config.oidc.providers.iter().map(|(name, settings)| (name.clone(), Arc::new(Provider::new(name, settings)))).collect();
        Ok(Some(IdTokenVerifier { providers, client, clock }))
    }

    /// The names of the configured providers, sorted.
    pub fn provider_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Verifies `id_token` as one of `provider`'s; `nonce` is the one the app asked the
    /// issuer to embed, when it asked for one.
    pub async fn verify(&self, provider: &str, id_token: &str, nonce: Option<&str>) -> Result<VerifiedIdentity, ApiError> {
        let provider = self
            .providers
            .get(provider)
            .ok_or_else(|| ApiError::new(ErrorCode::BadParam, format!("provider must be one of: {}", self.provider_names().join(", "))))?;
        if id_token.len() > MAX_ID_TOKEN_BYTES {
            return Err(bad_token("the ID token is too long"));
        }
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| bad_token("the ID token is not a signed JWT"))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(bad_token("the ID token is not signed with a public-key algorithm"));
        }
        let kid = header.kid.ok_or_else(|| bad_token("the ID token names no signing key (kid)"))?;
        let jwk =
            self.key(provider, &kid).await?.ok_or_else(|| bad_token("the ID token is signed with a key its issuer does not publish"))?;
        if jwk.common.key_algorithm.is_some_and(|alg| format!("{alg:?}") != format!("{:?}", header.alg)) {
            return Err(bad_token("the ID token's algorithm is not its key's"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| bad_token("the issuer's key cannot be used"))?;

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&provider.accepted_issuers);
        validation.set_audience(&provider.client_ids);
        // The lifetime is checked below, on the service's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::from(["exp", "iss", "aud", "sub"].map(String::from));
        let claims = jsonwebtoken::decode::<Claims>(id_token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                bad_token(match e.kind() {
                    ErrorKind::InvalidSignature => "the ID token's signature does not verify",
                    ErrorKind::InvalidIssuer => "the ID token is from another issuer",
                    ErrorKind::InvalidAudience => "the ID token is for another app (its audience is not among the provider's client ids)",
                    ErrorKind::MissingRequiredClaim(_) => "the ID token lacks iss, aud, sub or exp",
                    _ => "the ID token cannot be read",
                })
            })?
            .claims;

        let now = self.clock.now();
        let exp = claims.exp.ok_or_else(|| bad_token("the ID token lacks iss, aud, sub or exp"))?;
        if exp + LEEWAY_SECS <= now {
            return Err(bad_token("the ID token has expired; sign in again"));
        }
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) || claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(bad_token("the ID token is not valid yet"));
        }
        // A token issued to another client is not the app's, whatever else its audience holds.
        if claims.azp.as_ref().is_some_and(|azp| !provider.client_ids.contains(azp)) {
            return Err(bad_token(
                "the ID token was issued to another app (its authorized party, azp, is not among the provider's client ids)",
            ));
        }
        if let Some(expected) = nonce {
            if claims.nonce.as_deref() != Some(expected) {
                return Err(bad_token("the ID token does not carry the nonce the app sent"));
            }
        }
        let address = match provider.address_claim {
            AddressClaim::Email => {
                // An issuer that lets users type in any e-mail address must not sign them in
                // as that address's account: only an issuer's word that it verified it counts.
                let verified = match &claims.email_verified {
                    None if provider.email_verified_if_absent => true,
                    None => {
                        return Err(bad_token(
                            "the ID token does not say the issuer verified this e-mail address (no email_verified claim)",
                        ))
                    }
                    Some(serde_json::Value::Bool(verified)) => *verified,
                    Some(serde_json::Value::String(verified)) => verified == "true",
                    Some(_) => false,
                };
                if !verified {
                    return Err(bad_token("the issuer has not verified this e-mail address"));
                }
                let email = claims.email.as_deref().ok_or_else(|| bad_token("the ID token carries no e-mail address"))?;
                Address::Email(address::normalize_email(email).ok_or_else(|| bad_token("the ID token's e-mail address is malformed"))?)
            }
            AddressClaim::Sub => {
                let sub = claims.sub.as_str();
                if sub.is_empty() || sub.chars().count() > MAX_SUBJECT_CHARS || sub.chars().any(char::is_control) {
                    return Err(bad_token("the ID token's subject is empty, too long or malformed"));
                }
                Address::Account(format!("{}:{sub}", provider.name))
            }
        };
        Ok(VerifiedIdentity { provider: provider.name.clone(), address, issued_at: claims.iat })
    }

    /// The key `kid` of `provider`, from the cache or fetched (see [`KeyCache::answer`]).
    async fn key(&self, provider: &Provider, kid: &str) -> Result<Option<Jwk>, ApiError> {
        let now = self.clock.now();
        if let Some(answer) = provider.keys.read().await.answer(kid, now) {
            return answer;
        }
        let _fetching = provider.fetching.lock().await;
        // Another request may have fetched them while this one waited.
        if let Some(answer) = provider.keys.read().await.answer(kid, now) {
            return answer;
        }
        let fetched = self.fetch_keys(provider).await;
        let mut cache = provider.keys.write().await;
        cache.last_attempt = Some(now);
        let set = fetched?;
        let found = set.find(kid).cloned();
        cache.keys = Some(Keys { set, fetched_at: now });
        Ok(found)
    }

    async fn fetch_keys(&self, provider: &Provider) -> Result<JwkSet, ApiError> {
        let unreachable = |what: &str, why: String| {
            tracing::warn!(provider = provider.name, "the sign-in provider's {what} could not be fetched: {why}");
            keys_unavailable()
        };
        let discovery_url = format!("{}/.well-known/openid-configuration", provider.issuer.trim_end_matches('/'));
        let discovery: Discovery = self.get_json(&discovery_url).await.map_err(|e| unreachable("discovery document", e))?;
        if discovery.issuer.trim_end_matches('/') != provider.issuer.trim_end_matches('/') {
            return Err(unreachable("discovery document", format!("it names another issuer ({})", discovery.issuer)));
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await.map_err(|e| unreachable("keys", e))?;
        tracing::debug!(provider = provider.name, keys = set.keys.len(), "sign-in provider's keys fetched");
        Ok(set)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self.client.get(url).send().await.map_err(describe)?;
        if !response.status().is_success() {
            return Err(format!("HTTP {} from {url}", response.status().as_u16()));
        }
        response.json().await.map_err(|e| format!("unreadable reply from {url}: {}", describe(e)))
    }
}

fn bad_token(why: &str) -> ApiError {
    ApiError::new(ErrorCode::BadIdToken, why)
}

impl Provider {
    fn new(name: &str, settings: &OidcProvider) -> Provider {
        let mut accepted_issuers = vec![settings.issuer.clone()];
        if settings.issuer == "https://accounts.google.com" {
            accepted_issuers.push("accounts.google.com".to_string());
        }
        Provider {
            name: name.to_string(),
            issuer: settings.issuer.clone(),
            accepted_issuers,
            client_ids: settings.client_ids.clone(),
            address_claim: settings.address_claim,
            email_verified_if_absent: settings.email_verified_if_absent,
            keys: RwLock::default(),
            fetching: Mutex::new(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_of_the_setting_is_verified_against_its_issuers() {
        let providers = r#"{"google": {"client_ids": ["web.apps.example"]},
            "corp": {"issuer": "https://login.example.com/", "client_ids": ["messenger"], "address_claim": "sub"}}"#;
        let config = Config::from_vars([("OIDC_PROVIDERS", providers)]).unwrap();
        let verifier = IdTokenVerifier::from_config(&config, Clock::system()).unwrap().expect("providers are configured");
        assert_eq!(verifier.provider_names(), ["corp", "google"]);
        let (google, corp) = (&verifier.providers["google"], &verifier.providers["corp"]);
        assert_eq!(google.accepted_issuers, ["https://accounts.google.com", "accounts.google.com"], "and its older tokens' bare host");
        assert_eq!(
            (corp.issuer.as_str(), &corp.accepted_issuers[..]),
            ("https://login.example.com", &["https://login.example.com".to_string()][..])
        );
        assert_eq!((corp.address_claim, google.address_claim), (AddressClaim::Sub, AddressClaim::Email));
        let none = Config::from_vars([("OIDC_PROVIDERS", " ")]).unwrap();
        assert!(IdTokenVerifier::from_config(&none, Clock::system()).unwrap().is_none());
    }

    #[test]
    fn the_cache_answers_fresh_keys_and_says_when_to_fetch() {
        let set: JwkSet =
            serde_json::from_value(serde_json::json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "k1" }] }))
                .unwrap();
        let cache = KeyCache { keys: Some(Keys { set, fetched_at: 0 }), last_attempt: Some(0) };
        let kid = |answer: Option<Result<Option<Jwk>, ApiError>>| answer.map(|a| a.map(|jwk| jwk.and_then(|jwk| jwk.common.key_id)));
        assert_eq!(kid(cache.answer("k1", 100)), Some(Ok(Some("k1".into()))), "a cached key answers");
        assert_eq!(kid(cache.answer("k2", MIN_REFRESH_SECS - 1)), Some(Ok(None)), "an unknown key waits for the next refresh");
        assert_eq!(kid(cache.answer("k2", MIN_REFRESH_SECS)), None, "then fetches");
        assert_eq!(kid(cache.answer("k1", MAX_KEYS_AGE_SECS)), None, "keys a day old are fetched again before they verify");
        let failed = KeyCache { last_attempt: Some(MAX_KEYS_AGE_SECS), ..cache };
        let answer = failed.answer("k1", MAX_KEYS_AGE_SECS + 1).unwrap();
        assert_eq!(answer.unwrap_err().code, ErrorCode::IdProvider, "a stale key does not verify while its issuer is down");
        let never = KeyCache::default();
        assert_eq!(kid(never.answer("k1", 0)), None);
        let down = KeyCache { last_attempt: Some(0), ..KeyCache::default() };
        assert_eq!(down.answer("k1", RETRY_SECS - 1).unwrap().unwrap_err().code, ErrorCode::IdProvider);
        assert_eq!(kid(down.answer("k1", RETRY_SECS)), None);
    }
}
