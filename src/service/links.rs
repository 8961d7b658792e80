//! Linked addresses: a signed-in user proves a further address (a code sent to it, or an
//! ID token), and from then on a login through it is the same user, its token minted with
//! `linkto` = the user's own address so that the platform links the two.

use serde::Serialize;
use std::sync::Arc;

use crate::domain::account::Caller;
use crate::domain::address::{self, Address};
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::authenticators::ProofFields;
use crate::service::login::LoginFlow;
use crate::service::non_empty;
use crate::store::links::LinkOutcome;
use crate::store::{audit, Db};

/// A linked address as replies show it: the address, its kind (`phone`, `email` or
/// `account`) and when it was linked (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linked {
    pub address: String,
    pub kind: &'static str,
    pub linked_at: i64,
}

/// What `op=unlink` leaves: the linked addresses, and the sessions it ended.
#[derive(Debug)]
pub struct Unlinked {
    pub linked: Vec<Linked>,
    pub ended: usize,
}

/// Linking and unlinking addresses, and listing them.
pub struct Links {
    db: Arc<Db>,
    /// Proves the address to link, as a login would.
    login: Arc<LoginFlow>,
}

impl Links {
    pub fn new(db: Arc<Db>, login: Arc<LoginFlow>) -> Links {
        Links { db, login }
    }

    /// `op=link`: proves `fields`' address for `appid` and links it to the caller's account;
    /// answers the account's linked addresses.
    pub async fn link(
        &self,
        caller: &Caller,
        appid: Option<&str>,
        fields: ProofFields<'_>,
        client_ip: &str,
    ) -> Result<Vec<Linked>, ApiError> {
        let appid = non_empty(appid).ok_or_else(|| ApiError::new(ErrorCode::MissingAppid, "appid is required"))?;
        if !fields.has_id_token() && non_empty(fields.code).is_none() {
            return Err(ApiError::new(
                ErrorCode::BadParam,
                "otp is required: start a login for the phone or e-mail to link, then send its code with link (or send provider and id_token)",
            ));
        }
        let proof = self.login.prove(appid, &fields, None, client_ip).await?;
        let outcome = match self.db.link_address(caller.user_id, proof.address.as_str(), proof.claimed_code).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.login.release(&proof).await;
                return Err(e.into());
            }
        };
        let refused = match outcome {
            LinkOutcome::Linked | LinkOutcome::AlreadyLinked => None,
            LinkOutcome::OwnAddress => Some("this is the address the account was made with"),
            LinkOutcome::Taken => Some("this address belongs to another account; delete that account first, or unlink it there"),
        };
        if let Some(why) = refused {
            self.login.release(&proof).await;
            return Err(ApiError::new(ErrorCode::BadParam, why));
        }
        let own = Address::from_stored(&self.db.profile_of(caller.user_id).await?.address);
        if outcome == LinkOutcome::Linked {
            record(&self.db, &own, &proof.address, audit::ADDRESS_LINKED).await;
            tracing::info!(user_id = caller.user_id, linked = %proof.address.masked(), "address linked");
        }
        self.linked(caller.user_id).await
    }

    /// `op=unlink`: unlinks the address named by `phone`, `email` or `account`, ending the
    /// sessions that logged in through it; answers the linked addresses left.
    pub async fn unlink(&self, caller: &Caller, fields: &ProofFields<'_>, account: Option<&str>) -> Result<Unlinked, ApiError> {
        let address = if let Some(phone) = non_empty(fields.phone) {
            Address::Phone(
                address::normalize_phone(phone).ok_or_else(|| ApiError::new(ErrorCode::BadPhone, "phone is not a valid number"))?,
            )
        } else if let Some(email) = non_empty(fields.email) {
            Address::Email(
                address::normalize_email(email).ok_or_else(|| ApiError::new(ErrorCode::BadEmail, "email is not a valid e-mail address"))?,
            )
        } else if let Some(account) = non_empty(account) {
            Address::Account(account.to_string())
        } else {
            return Err(ApiError::new(ErrorCode::BadParam, "phone, email or account is required: the linked address to unlink"));
        };
        let own = Address::from_stored(&self.db.profile_of(caller.user_id).await?.address);
        if address == own {
            return Err(ApiError::new(
                ErrorCode::BadParam,
                "the address the account was made with cannot be unlinked; delete the account to part with it",
            ));
        }
        let Some(ended) = self.db.unlink_address(caller.user_id, address.as_str()).await? else {
            return Err(ApiError::new(ErrorCode::BadParam, "this address is not linked to the account"));
        };
        record(&self.db, &own, &address, audit::ADDRESS_UNLINKED).await;
        tracing::info!(user_id = caller.user_id, unlinked = %address.masked(), sessions = ended, "address unlinked");
        Ok(Unlinked { linked: self.linked(caller.user_id).await?, ended })
    }

    /// The account's linked addresses, oldest first.
    pub async fn linked(&self, user_id: i64) -> Result<Vec<Linked>, ApiError> {
        let linked = self.db.linked_addresses(user_id).await?.into_iter().map(|linked| Linked {
            kind: Address::from_stored(&linked.address).field(),
            address: linked.address,
            linked_at: linked.linked_at,
        });
        Ok(linked.collect())
    }
}

/// Records a link or unlink in the trail of both addresses, each naming the other masked.
async fn record(db: &Db, own: &Address, other: &Address, event: &'static str) {
    for (address, detail) in [(own, other), (other, own)] {
        if let Err(e) = db.audit(address.as_str(), event, detail.masked()).await {
            tracing::warn!("a {event} event could not be recorded in the audit trail: {e}");
        }
    }
}
