//! Delivery receipts: what the providers report about the messages we sent, checked
//! against the keys of the configured instances of that provider and applied to the
//! messages' courier rows. A message reported undelivered while its code still waits to
//! be used goes out again, with the same code, through the next instance of its route.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::{Config, ProviderInstance, Secret, VonageSignatureMethod};
use crate::delivery::courier::Courier;
use crate::delivery::receipts::{self, Callback, DeliveryStatus, Receipt, ReceiptError};
use crate::domain::metrics;
use crate::store::courier::{DeliveryReceipt, ReceiptOutcome, ReceiptStatus};
use crate::store::{Db, StorageError};

/// Longest provider error code kept on a row.
const MAX_ERROR_CODE_CHARS: usize = 64;

/// The providers that post receipts, each at `/delivery/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Twilio,
    Vonage,
    MessageBird,
    Whatsapp,
}

impl Provider {
    /// Its name in paths, logs and metrics (its instances' kind).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Vonage => "vonage",
            Provider::MessageBird => "messagebird",
            Provider::Whatsapp => "whatsapp",
        }
    }
}

/// A provider's request, as received.
pub struct Posted<'a> {
    /// The path and query string exactly as requested: with `PUBLIC_URL` before it, the URL
    /// the provider was given and signed.
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a receipt was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// `PUBLIC_URL` is not set: providers are given no URL, and the ones signed cannot be
    /// checked.
    NotTaken,
    /// The signature is missing or matches no configured key (or is stale).
    BadSignature,
    /// Signed, but not a receipt.
    Malformed(String),
    Storage(StorageError),
}

impl From<ReceiptError> for Refusal {
    fn from(error: ReceiptError) -> Refusal {
        match error {
            ReceiptError::BadSignature => Refusal::BadSignature,
            ReceiptError::Malformed(why) => Refusal::Malformed(why),
        }
    }
}

/// One provider's distinct keys, each with the instances that use it: instances of one
/// account share a key, and a receipt it signed may be for a message of any of them.
struct Keys<K> {
    keys: Vec<K>,
    instances: Vec<Vec<String>>,
}

impl<K: PartialEq> Keys<K> {
    fn of(named: impl IntoIterator<Item = (String, K)>) -> Keys<K> {
        let mut keys = Keys { keys: Vec::new(), instances: Vec::new() };
        for (name, key) in named {
            match keys.keys.iter().position(|known| *known == key) {
                Some(index) => keys.instances[index].push(name),
                None => {
                    keys.keys.push(key);
                    keys.instances.push(vec![name]);
                }
            }
        }
        keys
    }
}

/// Takes the providers' delivery receipts.
pub struct Receipts {
    db: Arc<Db>,
    /// Queues a message again, and knows the routes a resend may take.
    courier: Arc<Courier>,
    /// `PUBLIC_URL` without its trailing `/`, as the senders give it to providers.
    public_url: Option<String>,
    twilio: Keys<Secret>,
    vonage: Keys<(Secret, VonageSignatureMethod)>,
    messagebird: Keys<Secret>,
    whatsapp: Keys<Secret>,
    /// What Meta sends back when the WhatsApp webhook is registered.
    verify_tokens: Vec<Secret>,
    /// The refusal for want of `PUBLIC_URL` was logged.
    told_unset: AtomicBool,
}

impl Receipts {
    /// The keys of the routed instances: an instance without its receipt key (Vonage's
    /// `signature_secret`, MessageBird's `signing_key`, WhatsApp's `app_secret`) has its
    /// receipts refused.
    pub fn new(config: &Config, db: Arc<Db>, courier: Arc<Courier>) -> Receipts {
        let instances = &config.routing.resolved.instances;
        let named = |key: fn(&ProviderInstance) -> Option<Secret>| {
            instances.iter().filter_map(move |(name, instance)| key(instance).map(|secret| (name.clone(), secret)))
        };
        let twilio = Keys::of(named(|instance| match instance {
            ProviderInstance::Twilio(twilio) | ProviderInstance::TwilioVoice(twilio) => Some(twilio.auth_token.clone()),
            _ => None,
        }));
        let vonage = Keys::of(instances.iter().filter_map(|(name, instance)| match instance {
            ProviderInstance::Vonage(vonage) => {
                vonage.signature_secret.clone().map(|secret| (name.clone(), (secret, vonage.signature_method)))
            }
            _ => None,
        }));
        let messagebird = Keys::of(named(|instance| match instance {
            ProviderInstance::Messagebird(messagebird) => messagebird.signing_key.clone(),
            _ => None,
        }));
        let whatsapp = Keys::of(named(|instance| match instance {
            ProviderInstance::Whatsapp(whatsapp) => whatsapp.app_secret.clone(),
            _ => None,
        }));
        let verify_tokens = named(|instance| match instance {
            ProviderInstance::Whatsapp(whatsapp) => whatsapp.verify_token.clone(),
            _ => None,
        })
        .map(|(_, token)| token)
        .collect();
        Receipts {
            db,
            courier,
            public_url: config.apps.public_url.as_deref().map(|url| url.trim_end_matches('/').to_string()),
            twilio,
            vonage,
            messagebird,
            whatsapp,
            verify_tokens,
            told_unset: AtomicBool::new(false),
        }
    }

    /// Checks a provider's report and applies each receipt it carries; answers how many
    /// changed a message's record. A receipt for a message we do not know (or sent again
    /// since) is ignored.
    pub async fn take(&self, provider: Provider, posted: Posted<'_>) -> Result<usize, Refusal> {
        let url = self.url(posted.path_and_query)?;
        let callback = Callback { url: &url, headers: posted.headers, content_type: posted.content_type, body: posted.body };
        let now = self.db.clock().now();
        let (matched, read) = match provider {
            Provider::Twilio => receipts::twilio::verify_and_read(&callback, &exposed(&self.twilio.keys))?,
            Provider::Vonage => {
                let secrets: Vec<(&str, VonageSignatureMethod)> =
                    self.vonage.keys.iter().map(|(secret, method)| (secret.expose(), *method)).collect();
                receipts::vonage::verify_and_read(&callback, &secrets, now)?
            }
            Provider::MessageBird => receipts::messagebird::verify_and_read(&callback, &exposed(&self.messagebird.keys), now)?,
            Provider::Whatsapp => receipts::whatsapp::verify_and_read(&callback, &exposed(&self.whatsapp.keys))?,
        };
        let instances = match provider {
            Provider::Twilio => &self.twilio.instances,
            Provider::Vonage => &self.vonage.instances,
            Provider::MessageBird => &self.messagebird.instances,
            Provider::Whatsapp => &self.whatsapp.instances,
        };
        let signers = &instances[matched];
        let mut recorded = 0;
        for receipt in read {
            if self.apply(signers, receipt).await.map_err(Refusal::Storage)? {
                recorded += 1;
            }
        }
        Ok(recorded)
    }

    /// Meta's check of the WhatsApp webhook (its query string): the challenge to echo when
    /// the verify token is one of ours.
    pub fn whatsapp_challenge(&self, query: &str) -> Result<Option<String>, Refusal> {
        self.url("")?;
        let tokens: Vec<&str> = self.verify_tokens.iter().map(|secret| secret.expose()).collect();
        Ok(receipts::whatsapp::verification_challenge(query, &tokens))
    }

    /// The URL a provider requested: `PUBLIC_URL` and what reached us of it.
    fn url(&self, path_and_query: &str) -> Result<String, Refusal> {
        match &self.public_url {
            Some(base) => Ok(format!("{base}{path_and_query}")),
            None => {
                if !self.told_unset.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "delivery receipts are refused: PUBLIC_URL is not set, so providers are given no URL to report to and their signatures, which cover it, cannot be checked"
                    );
                }
                Err(Refusal::NotTaken)
            }
        }
    }

    /// Applies one receipt; whether it changed the message's record.
    async fn apply(&self, signers: &[String], receipt: Receipt) -> Result<bool, StorageError> {
        let Some(status) = receipt.status else { return Ok(false) };
        let status = match status {
            DeliveryStatus::Sent => ReceiptStatus::Sent,
            DeliveryStatus::Delivered => ReceiptStatus::Delivered,
            DeliveryStatus::Undelivered => ReceiptStatus::Undelivered,
            DeliveryStatus::Failed => ReceiptStatus::Failed,
        };
        let error_code = receipt.error_code.map(|code| code.chars().take(MAX_ERROR_CODE_CHARS).collect::<String>());
        let update = DeliveryReceipt {
            instances: signers.to_vec(),
            message_id: receipt.message_id,
            status,
            error_code: error_code.clone(),
            reported_at: receipt.reported_at,
        };
        let courier = Arc::clone(&self.courier);
        let carrier_left = move |address: &str, failed_via: &str| courier.has_carrier_left(address, failed_via);
        let ReceiptOutcome::Recorded { instance, address, queued_at, resent } =
            self.db.apply_delivery_receipt(update, carrier_left).await?
        else {
            return Ok(false);
        };
        let country = crate::domain::phone::country_label(&address);
        metrics::DELIVERY_RECEIPTS.with_label_values(&[&instance, country, status.as_str()]).inc();
        if status != ReceiptStatus::Sent {
            let reported_at = receipt.reported_at.unwrap_or_else(|| self.db.clock().now());
            let waited = (reported_at - queued_at).max(0);
            metrics::DELIVERY_RECEIPT_SECONDS.with_label_values(&[&instance, country]).observe(waited as f64);
        }
        if status.is_failure() {
            let code = error_code.as_deref().unwrap_or("none");
            let next = if resent { "sending it again through the next instance of its route" } else { "not sent again" };
            tracing::warn!(instance = %instance, error_code = code, "code message reported {}; {next}", status.as_str());
        }
        if resent {
            metrics::DELIVERY_RESENDS.with_label_values(&[&instance]).inc();
            self.courier.wake();
        }
        Ok(true)
    }
}

fn exposed(secrets: &[Secret]) -> Vec<&str> {
    secrets.iter().map(|secret| secret.expose()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_sharing_a_key_are_looked_up_together() {
        let keys = Keys::of([("uk".to_string(), "a"), ("us".to_string(), "b"), ("eu".to_string(), "a")]);
        assert_eq!(keys.keys, ["a", "b"]);
        assert_eq!(keys.instances, [vec!["uk".to_string(), "eu".to_string()], vec!["us".to_string()]]);
    }
}
