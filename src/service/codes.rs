//! The code authenticator: a one-time code sent to a phone (by SMS) or an e-mail
//! address proves it. A login start issues and sends the code; a verify checks and claims it.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Channel, Config};
use crate::delivery::captcha::Captcha;
use crate::delivery::courier::{Courier, Dispatch};
use crate::delivery::senders::{OtpMessage, Senders};
use crate::domain::address::{self, Address};
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::guesses::VerifyOutcome;
use crate::domain::keys::ServerKeys;
use crate::domain::metrics;
use crate::domain::otp::{self, OtpHasher};
use crate::domain::phone::PhonePolicy;
use crate::domain::ratelimit::{Admission, KeyedLimit, Limits, Refusal, SharedLimits};
use crate::domain::start_limits::{Start, StartLimits};
use crate::domain::templates::Templates;
use crate::service::authenticators::{Authenticator, LinkLookup, Proof, ProofFields, ProofTime};
use crate::service::{non_empty, MAX_ID_CHARS};
use crate::store::{self, audit, CodeGuess, Db, NewChallenge};

/// Beyond the upstream timeout, for recording the login (the writer may be busy).
const CLAIM_MARGIN_SECS: u64 = 30;

pub struct CodeAuthenticator {
    db: Arc<Db>,
    hasher: OtpHasher,
    senders: Senders,
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
    pub start_limits: Arc<StartLimits>,
    captcha: Option<Captcha>,
    pub courier: Arc<Courier>,
    /// How long a claimed code stays claimed: the exchange ends within the upstream
    /// timeout, so a claim older than that and a margin was stranded by a crash.
    claim_secs: i64,
}

impl CodeAuthenticator {
    /// `shared` keeps the rate limits in buckets every instance shares (Redis).
    pub fn new(
        config: &Config,
        db: Arc<Db>,
        keys: &ServerKeys,
        senders: Senders,
        shared: Option<&Arc<SharedLimits>>,
    ) -> Result<Self, String> {
        let courier = Arc::new(Courier::from_config(config, Arc::clone(&db), senders.clone(), keys.seal.clone()));
        let templates = Templates::from_config(config);
        templates.warn_if_over_one_segment(config.otp.length);
        Ok(CodeAuthenticator {
            db,
            hasher: keys.hasher.clone(),
            senders,
            limits: Arc::new(Limits::from_config(config, shared)),
            test_otps: otp::test_codes(config.otp.test_otps.expose()),
            otp_length: config.otp.length,
            otp_ttl_secs: config.otp.ttl_secs as i64,
            otp_resend_secs: config.otp.resend_secs as i64,
            otp_max_attempts: config.otp.max_attempts,
            require_challenge: config.otp.require_challenge,
            templates,
            phones: PhonePolicy::from_config(config),
            start_limits: Arc::new(StartLimits::from_config(config, shared)),
            captcha: Captcha::from_config(config)?,
            courier,
            claim_secs: i64::try_from(config.upstream.timeout_secs.saturating_add(CLAIM_MARGIN_SECS)).unwrap_or(i64::MAX / 2),
        })
    }

    /// Issues a code for the address in `fields` and sends it, through the instances of
    /// `channel` first when the client asked for one; answers the challenge id a verify
    /// sends back and the channel that carries the code (neither for test numbers; no
    /// channel for e-mail).
    pub async fn send_code(
        &self,
        appid: &str,
        fields: &ProofFields<'_>,
        channel: Option<&str>,
        captcha_token: Option<&str>,
        client_ip: &str,
    ) -> Result<(Option<String>, Option<Channel>), ApiError> {
        let asked = non_empty(channel).map(parse_channel).transpose()?;
        let (address, calling_code) = self.parse_address(fields)?;
        if !self.senders.reach(&address) {
            return Err(not_enabled(&address));
        }
        if let Some(asked) = asked.filter(|asked| !self.senders.channels(&address).contains(asked)) {
            return Err(channel_not_available(&address, asked));
        }
        if let Some(captcha) = &self.captcha {
            captcha.verify(captcha_token, client_ip).await?;
        }
        if self.test_otps.contains_key(address.as_str()) {
            return Ok((None, None));
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
        let message =
            OtpMessage { text: self.templates.render_to(&address, appid, &code), to: address.clone(), otp: code, appid: appid.to_string() };
        let start = Start { client_ip: client_ip.to_string(), address: address.as_str().to_string(), calling_code };
        let limits = Arc::clone(&self.start_limits);
        // Charged once the resend window allows a new code, so that only a start that
        // sends one spends the limits.
        let admit = move || -> Admission<Refusal> { Box::pin(async move { limits.admit(&start).await }) };
        match self.courier.store_and_send(challenge, message, asked, admit).await.map_err(internal)? {
            Dispatch::TooSoon(wait) => {
                metrics::RATELIMIT_REJECTIONS.with_label_values(&["resend"]).inc();
                Err(ApiError::rate_limited(wait, format!("a code was sent moments ago; wait {wait} seconds before asking again")))
            }
            Dispatch::Refused(refusal) => Err(refusal.into()),
            // The courier already logged why, and deleted the code nobody received.
            Dispatch::Failed => Err(ApiError::new(ErrorCode::SendFailed, "the code could not be delivered; please try again")),
            dispatch @ (Dispatch::Sent(_) | Dispatch::Retrying | Dispatch::InFlight) => {
                metrics::OTP_ISSUED.inc();
                // The courier logs each delivery from its own task; this line ties the code to the request.
                tracing::debug!(to = %address.masked(), appid, "code issued");
                let channel = match dispatch {
                    Dispatch::Sent(carried_by) => carried_by,
                    // Not carried yet: the instances tried first are of this channel.
                    _ => asked.or_else(|| self.senders.channels(&address).first().copied()),
                };
                Ok((Some(challenge_id), channel))
            }
        }
    }

    /// Checks `code` against the pending code of `address` for `appid`, within the verify
    /// limits, and claims it: a claimed code is accepted once. Returns its hash, for
    /// whatever the proof is for to consume it (or release the claim on failure).
    async fn confirm_code(
        &self,
        appid: &str,
        address: &Address,
        code: &str,
        challenge: Option<&str>,
        client_ip: &str,
    ) -> Result<([u8; 32], LinkLookup), ApiError> {
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

        let mut link_lookup = LinkLookup::NotDone;
        if let Some(fixed) = fixed {
            self.limits.admit_guess(address.as_str(), false, 0).await?;
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
            let admit =
                move |bound, attempts| -> Admission<Refusal> { Box::pin(async move { limits.admit_guess(&owned, bound, attempts).await }) };
            let outcome =
                self.db.claim_code(guess, self.db.clock().now(), self.otp_max_attempts, self.claim_secs, admit).await.map_err(internal)?;
            match outcome {
                VerifyOutcome::Claimed { link_target } => link_lookup = LinkLookup::Done(link_target),
                VerifyOutcome::Refused(refusal) => return Err(refusal.into()),
                VerifyOutcome::NoCode => {
                    let why = "no valid code for this address and app (expired, already used, asked for by another app, or never sent); request a new one";
                    return self.refused(address, "no_code", ApiError::new(ErrorCode::BadCode, why)).await;
                }
                VerifyOutcome::Wrong { left } => {
                    return self.refused(address, "wrong", ApiError::new(ErrorCode::BadCode, wrong_code(left))).await
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

        Ok((otp_hash, link_lookup))
    }

    /// Counts a refused verify and records it in the audit trail; answers `error`.
    async fn refused<T>(&self, address: &Address, reason: &'static str, error: ApiError) -> Result<T, ApiError> {
        metrics::OTP_FAILED.with_label_values(&[reason]).inc();
        let event = if error.code == ErrorCode::TooManyAttempts { audit::LOCKED_OUT } else { audit::LOGIN_FAILED };
        if let Err(e) = self.db.audit(address.as_str(), event, reason.to_string()).await {
            tracing::warn!("a refused verify could not be recorded in the audit trail: {e}");
        }
        Err(error)
    }

    /// The address, and for phones their country calling code.
    fn parse_address(&self, fields: &ProofFields<'_>) -> Result<(Address, Option<u16>), ApiError> {
        if let Some(phone) = non_empty(fields.phone) {
            // Test numbers are sent nothing, so the SMS policy does not apply to them (and they may be fictional).
            if let Some(digits) = address::normalize_phone(phone).filter(|digits| self.test_otps.contains_key(digits)) {
                return Ok((Address::Phone(digits), None));
            }
            let phone = self.phones.check(phone)?;
            return Ok((Address::Phone(phone.digits), Some(phone.calling_code)));
        }
        if let Some(email) = non_empty(fields.email) {
            return address::normalize_email(email)
                .map(|email| (Address::Email(email), None))
                .ok_or_else(|| ApiError::new(ErrorCode::BadEmail, "email is not a valid e-mail address"));
        }
        Err(ApiError::new(ErrorCode::BadPhone, "phone (or email) is required"))
    }
}

#[async_trait]
impl Authenticator for CodeAuthenticator {
    async fn prove(&self, appid: &str, fields: &ProofFields<'_>, known: Option<&Address>, client_ip: &str) -> Result<Proof, ApiError> {
        let (address, calling_code) = match known {
            Some(known) if non_empty(fields.phone).is_none() && non_empty(fields.email).is_none() => (known.clone(), None),
            _ => self.parse_address(fields)?,
        };
        let code = non_empty(fields.code).ok_or_else(|| ApiError::new(ErrorCode::BadParam, "otp is required"))?;
        let (otp_hash, link_lookup) = self.confirm_code(appid, &address, code, non_empty(fields.challenge), client_ip).await?;
        metrics::OTP_VERIFIED.inc();
        // Test numbers skip the phone policy, which finds the calling code of the others.
        let calling_code = calling_code.or_else(|| match &address {
            Address::Phone(digits) => crate::domain::phone::calling_code_of(digits),
            Address::Email(_) | Address::Account(_) => None,
        });
        Ok(Proof { address, calling_code, claimed_code: Some(otp_hash), made: ProofTime::Now, link_lookup })
    }
}

/// The `channel` field of a login start.
fn parse_channel(channel: &str) -> Result<Channel, ApiError> {
    Channel::parse(channel.trim())
        .ok_or_else(|| ApiError::new(ErrorCode::BadParam, "channel must be sms, whatsapp or voice (or absent, for the route's own order)"))
}

fn channel_not_available(address: &Address, channel: Channel) -> ApiError {
    let message = match address {
        Address::Phone(_) => format!("channel {} is not available for this number", channel.as_str()),
        Address::Email(_) | Address::Account(_) => "channel is for phone logins; leave it out for e-mail".to_string(),
    };
    ApiError::new(ErrorCode::BadParam, message)
}

fn not_enabled(address: &Address) -> ApiError {
    match address {
        Address::Phone(_) => ApiError::new(ErrorCode::BadPhone, "logins by phone are not enabled on this server"),
        Address::Email(_) => ApiError::new(ErrorCode::BadEmail, "logins by e-mail are not enabled on this server"),
        Address::Account(_) => ApiError::new(ErrorCode::BadParam, "an account at a sign-in provider signs in with its ID token"),
    }
}

async fn check(limit: &KeyedLimit, key: &str) -> Result<(), ApiError> {
    limit.check(key).await.map_err(ApiError::from)
}

fn internal(e: store::StorageError) -> ApiError {
    tracing::error!("database error: {e}");
    ApiError::internal()
}

/// The refusal of a wrong guess that leaves `left` more.
fn wrong_code(left: u32) -> String {
    match left {
        1 => "wrong code; 1 attempt left".to_string(),
        left => format!("wrong code; {left} attempts left"),
    }
}
