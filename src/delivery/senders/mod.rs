//! Pluggable OTP delivery. A provider is one file implementing [`OtpSender`]
//! plus its name in [`build`]; the settings it requires are checked at load
//! (`config::validate`).

mod http;
mod log;
mod messagebird;
mod provider_http;
mod smtp;
mod twilio;
mod twilio_voice;
mod vonage;
mod webhook;
mod whatsapp;

use async_trait::async_trait;
use std::sync::Arc;

use crate::config::Config;
use crate::domain::address::Address;

pub use self::http::HttpSmsSender;
pub use self::log::LogSender;
pub use self::messagebird::MessageBirdSender;
pub use self::smtp::SmtpSender;
pub use self::twilio::TwilioSender;
pub use self::twilio_voice::TwilioVoiceSender;
pub use self::vonage::VonageSender;
pub use self::webhook::WebhookSender;
pub use self::whatsapp::WhatsappSender;

/// One message to deliver.
#[derive(Clone, Debug)]
pub struct OtpMessage {
    pub to: Address,
    pub otp: String,
    /// The rendered `OTP_MESSAGE` template.
    pub text: String,
    pub appid: String,
}

/// A provider's acceptance of a message: its id there, which its delivery receipts name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    pub message_id: Option<String>,
}

impl Accepted {
    pub fn with_id(id: impl Into<String>) -> Accepted {
        Accepted { message_id: Some(id.into()) }
    }
}

#[async_trait]
pub trait OtpSender: Send + Sync {
    /// Short provider name for logs.
    fn name(&self) -> &'static str;

    /// Delivers the message. The error explains the failure for the log and must not contain credentials.
    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError>;
}

/// Why a message was not delivered, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// For the log; never holds credentials.
    pub reason: String,
    /// True when a retry cannot succeed (invalid number, rejected credentials).
    pub permanent: bool,
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> Self {
        SendError { reason: reason.into(), permanent: false }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError { reason: reason.into(), permanent: true }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Plain reasons (test doubles, simple senders) count as transient.
impl From<&str> for SendError {
    fn from(reason: &str) -> Self {
        SendError::transient(reason)
    }
}

impl From<String> for SendError {
    fn from(reason: String) -> Self {
        SendError::transient(reason)
    }
}

/// A named provider instance of a route.
pub struct Instance {
    pub name: String,
    /// Its kind (`twilio`, `whatsapp`, ...): which receipts it takes.
    pub kind: &'static str,
    pub channel: Channel,
    pub sender: Arc<dyn OtpSender>,
    /// Whether its provider posts delivery receipts to us (its kind has them and
    /// `PUBLIC_URL` is set).
    pub takes_receipts: bool,
}

/// What carries codes: the routes to phones over named instances, and the e-mail sender.
#[derive(Clone)]
pub struct Senders {
    pub instances: Arc<[Instance]>,
    /// Each prefix's ordered instances, longest prefix first, the default (`""`) last.
    routes: Arc<[(String, Vec<usize>)]>,
    pub email: Option<Arc<dyn OtpSender>>,
    /// Each instance's circuit breaker; none until the service is built (`with_breakers`).
    pub breakers: Option<Arc<Breakers>>,
}

impl Senders {
    /// These senders, with the breakers of their instances.
    pub fn with_breakers(self, breakers: Breakers) -> Senders {
        Senders { breakers: Some(Arc::new(breakers)), ..self }
    }

    /// Each instance and its breaker's state, in the order configured.
    pub fn health(&self) -> Vec<(String, BreakerState)> {
        self.breakers.as_ref().map(|breakers| breakers.snapshot()).unwrap_or_default()
    }

    /// The prefixes of the routes (`"*"` for the default) none of whose instances works now.
    pub fn routes_without_a_working_instance(&self) -> Vec<String> {
        let Some(breakers) = &self.breakers else { return Vec::new() };
        let works = |i: &usize| breakers.state(&self.instances[*i].name).is_none_or(|state| !state.is_degraded());
        let stuck = self.routes.iter().filter(|(_, route)| !route.iter().any(works));
        stuck.map(|(prefix, _)| if prefix.is_empty() { "*".to_string() } else { prefix.clone() }).collect()
    }

    /// One sender for both phones and e-mail (the log sender, or a test double).
    pub fn all(sender: Arc<dyn OtpSender>) -> Self {
        let instance = Instance {
            name: sender.name().to_string(),
            kind: sender.name(),
            channel: Channel::Sms,
            sender: sender.clone(),
            takes_receipts: false,
        };
        Senders { instances: Arc::new([instance]), routes: Arc::new([(String::new(), vec![0])]), email: Some(sender), breakers: None }
    }

    /// Test doubles as named instances on routes: `routes` maps a prefix (`""` for every
    /// other number) to indexes into `instances`.
    pub fn routed(instances: Vec<Instance>, routes: Vec<(String, Vec<usize>)>, email: Option<Arc<dyn OtpSender>>) -> Self {
        let mut routes = routes;
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Senders { instances: instances.into(), routes: routes.into(), email, breakers: None }
    }

    /// The ordered instances that carry codes to this number (E.164 digits): the route
    /// of the longest prefix that matches. Empty: phone logins are not enabled.
    pub fn route(&self, digits: &str) -> &[usize] {
        crate::config::route_in(&self.routes, digits)
    }

    /// Whether a code can be sent to this kind of address at all.
    pub fn reach(&self, address: &Address) -> bool {
        match address {
            Address::Phone(digits) => !self.route(digits).is_empty(),
            Address::Email(_) => self.email.is_some(),
            Address::Account(_) => false,
        }
    }

    /// The sender a first attempt to this address uses, and its name.
    pub fn first_for(&self, address: &Address) -> Option<(&str, &Arc<dyn OtpSender>)> {
        match address {
            Address::Phone(digits) => self.route(digits).first().map(|&i| (self.instances[i].name.as_str(), &self.instances[i].sender)),
            Address::Email(_) => self.email.as_ref().map(|sender| (sender.name(), sender)),
            Address::Account(_) => None,
        }
    }

    /// The channel of each instance that carries codes to this address, in route order;
    /// none for e-mail.
    pub fn channels(&self, address: &Address) -> Vec<Channel> {
        match address {
            Address::Phone(digits) => self.route(digits).iter().map(|&i| self.instances[i].channel).collect(),
            Address::Email(_) | Address::Account(_) => Vec::new(),
        }
    }
}

/// Whether the sender reaches e-mail addresses.
fn reaches_email(kind: SenderKind) -> bool {
    matches!(kind, SenderKind::Log | SenderKind::Webhook | SenderKind::Smtp)
}

/// The routes to phones as `SMS_ROUTES` (or `OTP_SENDER`) set them; `OTP_SENDER` serves
/// e-mail when it can deliver to it, and `EMAIL_SENDER` overrides it for e-mail.
pub fn build(config: &Config) -> Result<Senders, String> {
    let routing = &config.routing.resolved;
    let callbacks = config.apps.public_url.as_deref().map(|url| url.trim_end_matches('/'));
    let timeout = config.provider.timeout_secs;
    let mut instances = Vec::with_capacity(routing.instances.len());
    for (name, settings) in &routing.instances {
        let sender: Arc<dyn OtpSender> = match settings {
            ProviderInstance::Log => Arc::new(LogSender),
            ProviderInstance::Twilio(twilio) => Arc::new(TwilioSender::new(twilio, timeout, callbacks)?),
            ProviderInstance::TwilioVoice(twilio) => Arc::new(TwilioVoiceSender::new(twilio, timeout, callbacks)?),
            ProviderInstance::Vonage(vonage) => Arc::new(VonageSender::new(vonage, timeout, callbacks)?),
            ProviderInstance::Messagebird(messagebird) => Arc::new(MessageBirdSender::new(messagebird, timeout, callbacks)?),
            ProviderInstance::Http(http) => Arc::new(HttpSmsSender::new(http)?),
            ProviderInstance::Webhook(webhook) => Arc::new(WebhookSender::new(webhook, timeout)?),
            ProviderInstance::Whatsapp(whatsapp) => Arc::new(WhatsappSender::new(whatsapp, timeout)?),
        };
        let takes_receipts =
            callbacks.is_some() && matches!(settings.kind(), "twilio" | "twilio_voice" | "vonage" | "messagebird" | "whatsapp");
        instances.push(Instance { name: name.clone(), kind: settings.kind(), channel: settings.channel(), sender, takes_receipts });
    }
    let email_kind = config.email.sender.map(SenderKind::from).or(Some(config.otp.sender).filter(|kind| reaches_email(*kind)));
    let email: Option<Arc<dyn OtpSender>> = match email_kind {
        None => None,
        Some(SenderKind::Smtp) => Some(Arc::new(SmtpSender::from_config(config)?)),
        Some(SenderKind::Webhook) => match config.flat_instance(SenderKind::Webhook) {
            Some(ProviderInstance::Webhook(webhook)) => Some(Arc::new(WebhookSender::new(&webhook, timeout)?)),
            _ => None,
        },
        Some(_) => Some(Arc::new(LogSender)),
    };
    Ok(Senders { instances: instances.into(), routes: routing.routes.clone().into(), email, breakers: None })
}

use crate::config::{Channel, ProviderInstance, SenderKind};
use crate::delivery::breakers::Breakers;
use crate::domain::breaker::BreakerState;

/// The `+`-prefixed international form providers expect (addresses are stored as E.164 digits).
fn e164(message: &OtpMessage) -> String {
    format!("+{}", message.to.as_str())
}
