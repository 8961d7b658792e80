//! Login: an authenticator proves an address (a code sent to it, or an ID token), then
//! upstream mints the access token and the login is recorded.

use std::sync::Arc;
use tracing::Instrument;

use crate::config::{Channel, Config};
use crate::delivery::oidc::IdTokenVerifier;
use crate::delivery::senders::Senders;
use crate::delivery::upstream::{IssuedToken, Upstream};
use crate::domain::account::{refuse_control_characters, token_hash, OwnProfile, MAX_NAME_CHARS};
use crate::domain::address::Address;
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::keys::ServerKeys;
use crate::domain::metrics;
use crate::domain::ratelimit::SharedLimits;
use crate::service::authenticators::{Authenticator, IdTokenAuthenticator, LinkLookup, Proof, ProofFields};
use crate::service::codes::CodeAuthenticator;
use crate::service::{non_empty, MAX_ID_CHARS};
use crate::store::{self, CompletedLogin, Db};

/// The login fields of a request, as received (not yet validated).
#[derive(Default, Debug, Clone, Copy)]
pub struct LoginRequest<'a> {
    pub appid: Option<&'a str>,
    pub name: Option<&'a str>,
    pub device: Option<&'a str>,
    /// The CAPTCHA widget's response, when `CAPTCHA_PROVIDER` is set.
    pub captcha_token: Option<&'a str>,
    /// For a start: the channel to send the code by (`sms`, `whatsapp`, `voice`).
    pub channel: Option<&'a str>,
    /// The address and, for a verify, the code that proves it; or, for a login in one
    /// request, a sign-in provider's ID token.
    pub proof: ProofFields<'a>,
}

#[derive(Debug)]
pub enum LoginOutcome {
    /// A code is on its way; `challenge` binds a verify to it (none for test numbers), and
    /// `channel` carries it (none for test numbers and e-mail).
    CodeSent {
        challenge: Option<String>,
        channel: Option<Channel>,
    },
    LoggedIn(Box<LoggedIn>),
}

/// A completed login: the token and what the apps show of the user.
#[derive(Debug)]
pub struct LoggedIn {
    pub address: Address,
    pub issued: IssuedToken,
    /// The phone's country calling code; `None` for other addresses.
    pub calling_code: Option<u16>,
    pub profile: OwnProfile,
}

pub struct LoginFlow {
    db: Arc<Db>,
    upstream: Arc<Upstream>,
    /// Codes sent to phones and e-mail addresses.
    pub codes: CodeAuthenticator,
    /// ID tokens of the providers in `OIDC_PROVIDERS`; `None` when it names none.
    id_tokens: Option<IdTokenAuthenticator>,
    // Sessions.
    max_devices: usize,
    token_expiry_secs: i64,
}

impl LoginFlow {
    /// `shared` keeps the rate limits in buckets every instance shares (Redis).
    pub fn new(
        config: &Config,
        db: Arc<Db>,
        keys: &ServerKeys,
        senders: Senders,
        shared: Option<&Arc<SharedLimits>>,
    ) -> Result<Self, String> {
        let codes = CodeAuthenticator::new(config, Arc::clone(&db), keys, senders, shared)?;
        let id_tokens = IdTokenVerifier::from_config(config, db.clock().clone())?
            .map(|verifier| IdTokenAuthenticator::new(verifier, Arc::clone(&codes.limits)));
        Ok(LoginFlow {
            db,
            upstream: Arc::new(Upstream::from_config(config)?),
            codes,
            id_tokens,
            max_devices: config.sessions.max_devices,
            token_expiry_secs: i64::try_from(config.upstream.token_expiry_mins.saturating_mul(60)).unwrap_or(i64::MAX / 2),
        })
    }

    /// The authenticator the proof in `fields` is for: an ID token's, or a code's.
    fn authenticator(&self, fields: &ProofFields<'_>) -> Result<&dyn Authenticator, ApiError> {
        if !fields.has_id_token() {
            return Ok(&self.codes);
        }
        match &self.id_tokens {
            Some(id_tokens) => Ok(id_tokens),
            None => Err(ApiError::new(ErrorCode::BadParam, "sign-in with an ID token is not enabled on this server (OIDC_PROVIDERS)")),
        }
    }

    /// Proves an address with whichever authenticator `fields` call for (see [`Authenticator::prove`]).
    pub async fn prove(&self, appid: &str, fields: &ProofFields<'_>, known: Option<&Address>, client_ip: &str) -> Result<Proof, ApiError> {
        self.authenticator(fields)?.prove(appid, fields, known, client_ip).await
    }

    /// Gives back the code a proof claimed, when what it was for failed.
    pub async fn release(&self, proof: &Proof) {
        if let Err(e) = release_claim(&self.db, &proof.address, proof.claimed_code).await {
            tracing::warn!(to = %proof.address.masked(), "a claimed code could not be given back (it frees itself after its claim times out): {e}");
        }
    }

    pub async fn login(&self, request: LoginRequest<'_>, client_ip: &str) -> Result<LoginOutcome, ApiError> {
        let appid = non_empty(request.appid).ok_or_else(|| ApiError::new(ErrorCode::MissingAppid, "appid is required"))?;
        if appid.chars().count() > MAX_ID_CHARS {
            return Err(ApiError::new(ErrorCode::BadParam, format!("appid must be at most {MAX_ID_CHARS} characters")));
        }
        refuse_control_characters("appid", appid)?;
        let fields = request.proof;
        if !fields.has_id_token() && non_empty(fields.code).is_none() {
            let (challenge, channel) =
                self.codes.send_code(appid, &fields, request.channel, non_empty(request.captcha_token), client_ip).await?;
            return Ok(LoginOutcome::CodeSent { challenge, channel });
        }
        // Checked before the proof, which may use up a code or a limit.
        let name = non_empty(request.name).unwrap_or("");
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ApiError::new(ErrorCode::BadParam, format!("name must be at most {MAX_NAME_CHARS} characters")));
        }
        let device = non_empty(request.device);
        if device.is_some_and(|d| d.chars().count() > MAX_ID_CHARS) {
            return Err(ApiError::new(ErrorCode::BadParam, format!("device must be at most {MAX_ID_CHARS} characters")));
        }
        refuse_control_characters("name", name)?;
        refuse_control_characters("device", device.unwrap_or_default())?;
        let proof = self.prove(appid, &fields, None, client_ip).await?;
        let login = ProvenLogin {
            proof,
            name: name.to_string(),
            appid: appid.to_string(),
            device: device.map(String::from),
            token_expiry_secs: self.token_expiry_secs,
            max_devices: self.max_devices,
        };
        // A task of its own: if the request is cut off (timeout, client gone), a claimed code
        // is still released or the login still recorded, instead of the code staying claimed.
        tokio::spawn(exchange(Arc::clone(&self.upstream), Arc::clone(&self.db), login).in_current_span()).await.map_err(|e| {
            tracing::error!("login task failed: {e}");
            ApiError::internal()
        })?
    }
}

/// A proven address on its way to becoming an access token.
struct ProvenLogin {
    proof: Proof,
    name: String,
    appid: String,
    device: Option<String>,
    token_expiry_secs: i64,
    max_devices: usize,
}

/// Has upstream issue the token, then records the login; on a failure gives a claimed
/// code back so that a retry with it works.
async fn exchange(upstream: Arc<Upstream>, db: Arc<Db>, login: ProvenLogin) -> Result<LoginOutcome, ApiError> {
    let ProvenLogin { proof, name, appid, device, token_expiry_secs, max_devices } = login;
    let Proof { address, calling_code, claimed_code, link_lookup, .. } = proof;
    // A login through a linked address is its user's: the platform links the two.
    let linkto = match link_lookup {
        LinkLookup::Done(linkto) => linkto,
        LinkLookup::NotDone => match db.link_target(address.as_str()).await {
            Ok(linkto) => linkto,
            Err(e) => {
                release_claim(&db, &address, claimed_code).await.map_err(internal)?;
                return Err(internal(e));
            }
        },
    };
    let issued = match upstream.useradd(address.as_str(), &name, &appid, device.as_deref(), linkto.as_deref()).await {
        Ok(issued) => issued,
        Err(e) => {
            metrics::UPSTREAM_FAILURES.inc();
            tracing::warn!(to = %address.masked(), "upstream useradd failed: {}", address.masked_in(&e.detail));
            // The user did nothing wrong: give the code back so a retry with it works.
            release_claim(&db, &address, claimed_code).await.map_err(internal)?;
            let message = match e.unreachable {
                Some(cause) => format!("the messaging platform could not be reached ({cause}); the server's UPSTREAM_URL or network needs attention, and your code stays valid for a retry"),
                None => "the messaging platform did not issue a token; retry with the same code".to_string(),
            };
            return Err(ApiError::new(ErrorCode::Upstream, message));
        }
    };

    let now_ms = db.clock().now_ms();
    let completed = CompletedLogin {
        address: address.as_str().to_string(),
        uid: match &issued.uid {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        name: name.clone(),
        token_sha256: token_hash(&issued.token),
        now: now_ms / 1000,
        appid: appid.clone(),
        device: device.unwrap_or_default(),
        now_ms,
        expires_at: (now_ms / 1000).saturating_add(token_expiry_secs),
        max_devices,
    };
    // A token without its session would be refused at the app's first call: when the login
    // cannot be recorded, the client is told to retry and the code is given back for it.
    let profile = match db.record_login(completed, claimed_code).await {
        Ok(record) => {
            for evicted in &record.evicted {
                let (evicted_appid, evicted_device) = (&evicted.appid, &evicted.device);
                tracing::debug!(to = %address.masked(), evicted_appid, evicted_device, "device limit reached: least recently used session ended");
            }
            if record.notified > 0 {
                tracing::debug!(to = %address.masked(), contacts = record.notified, "first login: contacts will be told");
            }
            record.profile
        }
        Err(e) => {
            tracing::error!(to = %address.masked(), "upstream issued a token but the login could not be recorded: {e}");
            if let Err(e) = release_claim(&db, &address, claimed_code).await {
                tracing::error!(to = %address.masked(), "the code could not be given back either (it frees itself after its claim times out): {e}");
            }
            return Err(ApiError::new(ErrorCode::Internal, "the login could not be recorded; please retry with the same code"));
        }
    };
    tracing::debug!(to = %address.masked(), appid, "login complete");
    Ok(LoginOutcome::LoggedIn(Box::new(LoggedIn { address, issued, calling_code, profile })))
}

/// Gives back `claimed_code` of `address`, if a code was claimed, so that a retry with it works.
async fn release_claim(db: &Db, address: &Address, claimed_code: Option<[u8; 32]>) -> Result<(), store::StorageError> {
    match claimed_code {
        Some(otp_hash) => db.release_code(address.as_str().to_string(), otp_hash).await,
        None => Ok(()),
    }
}

fn internal(e: store::StorageError) -> ApiError {
    tracing::error!("database error: {e}");
    ApiError::internal()
}
