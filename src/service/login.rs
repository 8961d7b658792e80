//! The two-step login: start (issue and send a code) and verify (check the code,
//! then have upstream mint the access token).

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use crate::config::Config;
use crate::delivery::captcha::Captcha;
use crate::delivery::courier::{Courier, Dispatch};
use crate::delivery::senders::{OtpMessage, Senders};
use crate::delivery::upstream::{IssuedToken, Upstream};
use crate::domain::account::{refuse_control_characters, token_hash, OwnProfile, MAX_NAME_CHARS};
use crate::domain::address::{self, Address};
use crate::domain::client_ip::network_key;
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::keys::ServerKeys;
use crate::domain::metrics;
use crate::domain::otp::{self, OtpHasher};
use crate::domain::phone::PhonePolicy;
use crate::domain::ratelimit::{Admission, KeyedLimit, Limits, Refusal, SharedLimits};
use crate::domain::sms_limits::SmsLimits;
use crate::domain::templates::Templates;
use crate::service::non_empty;
use crate::store::{self, audit, CodeGuess, CompletedLogin, Db, NewChallenge, VerifyOutcome};

const MAX_ID_CHARS: usize = 128;

/// The login fields of a request, as received (not yet validated).
#[derive(Default, Debug, Clone)]
pub struct LoginRequest {
    pub appid: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The code, when this request verifies one.
    pub otp: Option<String>,
    pub device: Option<String>,
    /// The CAPTCHA widget's response, when `CAPTCHA_PROVIDER` is set.
    pub captcha_token: Option<String>,
    /// The challenge id of the start reply, sent back with the code.
    pub challenge: Option<String>,
}

#[derive(Debug)]
pub enum LoginOutcome {
    /// A code is on its way; `challenge` binds a verify to it (none for test numbers).
    CodeSent {
        challenge: Option<String>,
    },
    LoggedIn(Box<LoggedIn>),
}

/// A completed login: the token and what the apps show of the user.
#[derive(Debug)]
pub struct LoggedIn {
    pub address: Address,
    pub issued: IssuedToken,
    /// The phone's country calling code; `None` for e-mail addresses.
    pub calling_code: Option<u16>,
    pub profile: OwnProfile,
}

pub struct LoginFlow {
    db: Arc<Db>,
    hasher: OtpHasher,
    senders: Senders,
    upstream: Arc<Upstream>,
    pub limits: Arc<Limits>,
    test_otps: HashMap<String, String>,
    otp_length: usize,
    otp_ttl_secs: i64,
    otp_resend_secs: i64,
    otp_max_attempts: u32,
    /// Refuse verifies that do not send the start reply's challenge id back.
    require_challenge: bool,
    templates: Templates,
    phones: PhonePolicy,
    pub sms_limits: SmsLimits,
    captcha: Option<Captcha>,
    pub courier: Arc<Courier>,
    // Sessions.
    max_devices: usize,
    token_expiry_secs: i64,
    /// How long a claimed code stays claimed: the exchange ends within the upstream
    /// timeout, so a claim older than that and a margin was stranded by a crash.
    claim_secs: i64,
}

/// Beyond the upstream timeout, for recording the login (the writer may be busy).
const CLAIM_MARGIN_SECS: u64 = 30;

impl LoginFlow {
    /// `shared` keeps the rate limits in buckets every instance shares (Redis).
    pub fn new(
        config: &Config,
        db: Arc<Db>,
        keys: &ServerKeys,
        senders: Senders,
        shared: Option<&Arc<SharedLimits>>,
    ) -> Result<Self, String> {
        let courier = Arc::new(Courier::from_config(config, Arc::clone(&db), senders.clone(), keys.seal.clone()));
        let templates = Templates::from_config(config)?;
        templates.warn_if_over_one_segment(config.otp.length);
        Ok(LoginFlow {
            db,
            hasher: keys.hasher.clone(),
            senders,
            upstream: Arc::new(Upstream::from_config(config)?),
            limits: Arc::new(Limits::from_config(config, shared)),
            test_otps: otp::test_codes(config.test_otps.expose())?,
            otp_length: config.otp.length,
            otp_ttl_secs: config.otp.ttl_secs as i64,
            otp_resend_secs: config.otp.resend_secs as i64,
            otp_max_attempts: config.otp.max_attempts,
            require_challenge: config.require_challenge,
            templates,
            phones: PhonePolicy::from_config(config)?,
            sms_limits: SmsLimits::from_config(config, shared),
            captcha: Captcha::from_config(config)?,
            courier,
            max_devices: config.max_devices,
            token_expiry_secs: i64::try_from(config.token_expiry_mins.saturating_mul(60)).unwrap_or(i64::MAX / 2),
            claim_secs: i64::try_from(config.upstream.timeout_secs.saturating_add(CLAIM_MARGIN_SECS)).unwrap_or(i64::MAX / 2),
        })
    }

    pub async fn login(&self, request: LoginRequest, client_ip: &str) -> Result<LoginOutcome, ApiError> {
        let appid = non_empty(request.appid.as_deref()).ok_or_else(|| ApiError::new(ErrorCode::MissingAppid, "appid is required"))?;
        if appid.chars().count() > MAX_ID_CHARS {
            return Err(ApiError::new(ErrorCode::BadParam, format!("appid must be at most {MAX_ID_CHARS} characters")));
        }
        refuse_control_characters("appid", appid)?;
        let (address, calling_code) = self.parse_address(&request)?;
        match non_empty(request.otp.as_deref()) {
            None => self.start(appid, address, calling_code, non_empty(request.captcha_token.as_deref()), client_ip).await,
            Some(code) => {
                let name = non_empty(request.name.as_deref()).unwrap_or("");
                if name.chars().count() > MAX_NAME_CHARS {
                    return Err(ApiError::new(ErrorCode::BadParam, format!("name must be at most {MAX_NAME_CHARS} characters")));
                }
                let device = non_empty(request.device.as_deref());
                if device.is_some_and(|d| d.chars().count() > MAX_ID_CHARS) {
                    return Err(ApiError::new(ErrorCode::BadParam, format!("device must be at most {MAX_ID_CHARS} characters")));
                }
                refuse_control_characters("name", name)?;
                refuse_control_characters("device", device.unwrap_or_default())?;
                let guess = VerifyRequest { code, name, device, challenge: non_empty(request.challenge.as_deref()) };
                self.verify(appid, address, calling_code, guess, client_ip).await
            }
        }
    }

    async fn start(
        &self,
        appid: &str,
        address: Address,
        calling_code: Option<u16>,
        captcha_token: Option<&str>,
        client_ip: &str,
    ) -> Result<LoginOutcome, ApiError> {
        if self.senders.for_address(&address).is_none() {
            return Err(not_enabled(&address));
        }
        check(&self.limits.start_per_ip, client_ip).await?;
        check(&self.sms_limits.start_per_network, &network_key(client_ip)).await?;
        if let Some(captcha) = &self.captcha {
            captcha.verify(captcha_token, client_ip).await?;
        }
        check(&self.limits.start_per_address, address.as_str()).await?;
        if let Some(code) = calling_code {
            check(&self.sms_limits.start_per_calling_code, &code.to_string()).await?;
        }
        if self.test_otps.contains_key(address.as_str()) {
            return Ok(LoginOutcome::CodeSent { challenge: None });
        }

        let code = otp::generate(self.otp_length);
        let otp_hash = self.hasher.hash(address.as_str(), &code);
        let challenge_id = otp::challenge_id();
        let challenge = NewChallenge {
            address: address.as_str().to_string(),
            appid: appid.to_string(),
            otp_hash,
            challenge_sha256: otp::challenge_sha256(&challenge_id),
            now: self.db.clock().now(),
            ttl_secs: self.otp_ttl_secs,
            resend_secs: self.otp_resend_secs,
        };
        let message = OtpMessage { text: self.templates.render(appid, &code), to: address.clone(), otp: code, appid: appid.to_string() };
        // Only SMS spends the global budget (e-mail costs nothing per message).
        let budget = calling_code.map(|_| self.sms_limits.budget());
        let admit = move || -> Admission<Refusal> {
            Box::pin(async move {
                match budget {
                    Some(budget) => budget.spend().await,
                    None => Ok(()),
                }
            })
        };
        match self.courier.store_and_send(challenge, message, admit).await.map_err(internal)? {
            Dispatch::TooSoon(wait) => {
                metrics::RATELIMIT_REJECTIONS.with_label_values(&["resend"]).inc();
                Err(ApiError::rate_limited(wait, format!("a code was sent moments ago; wait {wait} seconds before asking again")))
            }
            Dispatch::Refused(Refusal::Wait(wait)) => {
                Err(ApiError::rate_limited(wait, format!("sending is paused; retry in {wait} seconds")))
            }
            Dispatch::Refused(refusal) => Err(refusal.into()),
            // The courier already logged why, and deleted the code nobody received.
            Dispatch::Failed => Err(ApiError::new(ErrorCode::SendFailed, "the code could not be delivered; please try again")),
            Dispatch::Sent | Dispatch::Retrying | Dispatch::InFlight => {
                metrics::OTP_ISSUED.inc();
                // The courier logs each delivery from its own task; this line ties the code to the request.
                tracing::debug!(to = %address.masked(), appid, "code issued");
                Ok(LoginOutcome::CodeSent { challenge: Some(challenge_id) })
            }
        }
    }

    async fn verify(
        &self,
        appid: &str,
        address: Address,
        calling_code: Option<u16>,
        request: VerifyRequest<'_>,
        client_ip: &str,
    ) -> Result<LoginOutcome, ApiError> {
        let VerifyRequest { code, name, device, challenge } = request;
        let otp_hash = self.confirm_code(appid, &address, code, challenge, client_ip).await?;
        metrics::OTP_VERIFIED.inc();
        let claimed = ClaimedLogin {
            // Test numbers skip the phone policy, which finds the calling code of the others.
            calling_code: calling_code.or_else(|| match &address {
                Address::Phone(digits) => crate::domain::phone::calling_code_of(digits),
                Address::Email(_) => None,
            }),
            address,
            name: name.to_string(),
            appid: appid.to_string(),
            device: device.map(String::from),
            otp_hash,
            token_expiry_secs: self.token_expiry_secs,
            max_devices: self.max_devices,
        };
        // A task of its own: if the request is cut off (timeout, client gone), the claim is
        // still released or the login still recorded, instead of the code staying claimed.
        tokio::spawn(exchange(Arc::clone(&self.upstream), Arc::clone(&self.db), claimed).in_current_span()).await.map_err(|e| {
            tracing::error!("login task failed: {e}");
            ApiError::internal()
        })?
    }

    /// Checks `code` against the pending code of `address` for `appid`, within the verify
    /// limits, and claims it: a claimed code is accepted once. Returns its hash, for
    /// whatever the proof is for to consume it (or release the claim on failure).
    pub async fn confirm_code(
        &self,
        appid: &str,
        address: &Address,
        code: &str,
        challenge: Option<&str>,
        client_ip: &str,
    ) -> Result<[u8; 32], ApiError> {
        let fixed = self.test_otps.get(address.as_str());
        // A code of another shape cannot match: refused before it spends a guess or a limit.
        // (A JSON number loses a code's leading zeros; the apps send strings.)
        if fixed.is_none() && (code.len() != self.otp_length || !code.bytes().all(|b| b.is_ascii_digit())) {
            return Err(ApiError::new(ErrorCode::BadParam, format!("the code must be a string of {} digits", self.otp_length)));
        }
        // Test numbers have no challenge id: their start reply carries none.
        if fixed.is_none() && self.require_challenge && challenge.is_none() {
            return Err(ApiError::new(ErrorCode::BadParam, "challenge is required: send back the one the login start answered"));
        }
        if challenge.is_some_and(|c| c.len() > MAX_ID_CHARS) {
            return Err(ApiError::new(ErrorCode::BadParam, format!("challenge must be at most {MAX_ID_CHARS} characters")));
        }
        check(&self.limits.verify_per_ip, client_ip).await?;
        let otp_hash = self.hasher.hash(address.as_str(), code);

        if let Some(fixed) = fixed {
            check(&self.limits.verify_per_address, address.as_str()).await?;
            if !otp::same(fixed.as_bytes(), code.as_bytes()) {
                return self.refused(address, "wrong", ApiError::new(ErrorCode::BadCode, "wrong code")).await;
            }
        } else {
            let guess = CodeGuess {
                address: address.as_str().to_string(),
                appid: appid.to_string(),
                otp_hash,
                challenge_sha256: challenge.map(otp::challenge_sha256),
            };
            let (limits, owned) = (Arc::clone(&self.limits), address.as_str().to_string());
            // Spent only by a guess that could match a pending code: guesses that cannot
            // (another app, no code) must not lock the address's owner out.
            let admit = move || -> Admission<Refusal> { Box::pin(async move { limits.verify_per_address.check(&owned).await }) };
            let outcome =
                self.db.claim_code(guess, self.db.clock().now(), self.otp_max_attempts, self.claim_secs, admit).await.map_err(internal)?;
            match outcome {
                VerifyOutcome::Claimed => {}
                VerifyOutcome::Refused(refusal) => return Err(refusal.into()),
                VerifyOutcome::NoCode => {
                    let why = "no valid code for this address (expired, already used, or never sent); request a new one";
                    return self.refused(address, "no_code", ApiError::new(ErrorCode::BadCode, why)).await;
                }
                VerifyOutcome::Wrong { left } => {
                    return self
                        .refused(address, "wrong", ApiError::new(ErrorCode::BadCode, format!("wrong code; {left} attempts left")))
                        .await
                }
                VerifyOutcome::TooManyAttempts => {
                    return self
                        .refused(
                            address,
                            "too_many_attempts",
                            ApiError::new(ErrorCode::TooManyAttempts, "too many wrong codes; request a new one"),
                        )
                        .await
                }
            }
        }

        Ok(otp_hash)
    }

    /// Counts a refused verify and records it in the audit trail; answers `error`.
    async fn refused(&self, address: &Address, reason: &'static str, error: ApiError) -> Result<[u8; 32], ApiError> {
        metrics::OTP_FAILED.with_label_values(&[reason]).inc();
        let event = if error.code == ErrorCode::TooManyAttempts { audit::LOCKED_OUT } else { audit::LOGIN_FAILED };
        if let Err(e) = self.db.audit(address.as_str(), event, reason.to_string()).await {
            tracing::warn!("a refused verify could not be recorded in the audit trail: {e}");
        }
        Err(error)
    }
}

/// The fields of a verify besides the address and app.
struct VerifyRequest<'a> {
    code: &'a str,
    name: &'a str,
    device: Option<&'a str>,
    challenge: Option<&'a str>,
}

/// A verified, claimed code on its way to becoming an access token.
struct ClaimedLogin {
    address: Address,
    calling_code: Option<u16>,
    name: String,
    appid: String,
    device: Option<String>,
    otp_hash: [u8; 32],
    token_expiry_secs: i64,
    max_devices: usize,
}

/// Has upstream issue the token, then records the login; on an upstream failure gives
/// the code back so that a retry with it works.
async fn exchange(upstream: Arc<Upstream>, db: Arc<Db>, login: ClaimedLogin) -> Result<LoginOutcome, ApiError> {
    let ClaimedLogin { address, calling_code, name, appid, device, otp_hash, token_expiry_secs, max_devices } = login;
    let issued = match upstream.useradd(address.as_str(), &name, &appid, device.as_deref()).await {
        Ok(issued) => issued,
        Err(e) => {
            metrics::UPSTREAM_FAILURES.inc();
            tracing::warn!(to = %address.masked(), "upstream useradd failed: {}", address.masked_in(&e.detail));
            // The user did nothing wrong: give the code back so a retry with it works.
            db.release_code(address.as_str().to_string(), otp_hash).await.map_err(internal)?;
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
    let profile = match db.record_login(completed, otp_hash).await {
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
            if let Err(e) = db.release_code(address.as_str().to_string(), otp_hash).await {
                tracing::error!(to = %address.masked(), "the code could not be given back either (it frees itself after its claim times out): {e}");
            }
            return Err(ApiError::new(ErrorCode::Internal, "the login could not be recorded; please retry with the same code"));
        }
    };
    tracing::debug!(to = %address.masked(), appid, "login complete");
    Ok(LoginOutcome::LoggedIn(Box::new(LoggedIn { address, issued, calling_code, profile })))
}

impl LoginFlow {
    /// The address, and for phones their country calling code.
    fn parse_address(&self, request: &LoginRequest) -> Result<(Address, Option<u16>), ApiError> {
        if let Some(phone) = non_empty(request.phone.as_deref()) {
            // Test numbers are sent nothing, so the SMS policy does not apply to them (and they may be fictional).
            if let Some(digits) = address::normalize_phone(phone).filter(|digits| self.test_otps.contains_key(digits)) {
                return Ok((Address::Phone(digits), None));
            }
            let phone = self.phones.check(phone)?;
            return Ok((Address::Phone(phone.digits), Some(phone.calling_code)));
        }
        if let Some(email) = non_empty(request.email.as_deref()) {
            return address::normalize_email(email)
                .map(|email| (Address::Email(email), None))
                .ok_or_else(|| ApiError::new(ErrorCode::BadEmail, "email is not a valid e-mail address"));
        }
        Err(ApiError::new(ErrorCode::BadPhone, "phone (or email) is required"))
    }
}

fn not_enabled(address: &Address) -> ApiError {
    match address {
        Address::Phone(_) => ApiError::new(ErrorCode::BadPhone, "logins by phone are not enabled on this server"),
        Address::Email(_) => ApiError::new(ErrorCode::BadEmail, "logins by e-mail are not enabled on this server"),
    }
}

async fn check(limit: &KeyedLimit, key: &str) -> Result<(), ApiError> {
    limit.check(key).await.map_err(ApiError::from)
}

fn internal(e: store::StorageError) -> ApiError {
    tracing::error!("database error: {e}");
    ApiError::internal()
}
