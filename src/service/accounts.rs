//! Deleting an account: by its user (`op=deleteaccount`, with a fresh code or ID token,
//! so that a stolen access token alone cannot), or by an operator.

use std::sync::Arc;

use crate::domain::account::Caller;
use crate::domain::address::Address;
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::authenticators::ProofFields;
use crate::service::login::LoginFlow;
use crate::service::uploads::Files;
use crate::store::{audit, Db};

/// How old an ID token may be to delete an account: an ID token signs in until it expires
/// (usually an hour), and one caught on its way to an earlier sign-in must not delete.
pub const MAX_ID_TOKEN_AGE_TO_DELETE_SECS: i64 = 5 * 60;

/// Deleting accounts, with what it takes: the login flow that proves the address again,
/// and the files that hold the photo.
pub struct Accounts {
    db: Arc<Db>,
    login: Arc<LoginFlow>,
    files: Arc<Files>,
}

/// The fields of `op=deleteaccount` besides the token.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeleteRequest<'a> {
    /// The app the code was asked for: codes are bound to it.
    pub appid: Option<&'a str>,
    /// A fresh proof of the account's address: the code a login start for it sent (the
    /// address defaults to the account's own), or an ID token.
    pub proof: ProofFields<'a>,
}

impl Accounts {
    pub fn new(db: Arc<Db>, login: Arc<LoginFlow>, files: Arc<Files>) -> Accounts {
        Accounts { db, login, files }
    }

    /// `op=deleteaccount`: the caller proves their address again (a fresh code, or an ID
    /// token), then the account goes (see [`Accounts::delete`]).
    pub async fn delete_own(&self, caller: &Caller, request: DeleteRequest<'_>, client_ip: &str) -> Result<(), ApiError> {
        let appid = super::non_empty(request.appid).ok_or_else(|| ApiError::new(ErrorCode::MissingAppid, "appid is required"))?;
        if !request.proof.has_id_token() && super::non_empty(request.proof.code).is_none() {
            return Err(ApiError::new(
                ErrorCode::BadParam,
                "otp is required: start a login for your own phone or e-mail, then send its code with deleteaccount (or send provider and id_token)",
            ));
        }
        let own = Address::from_stored(&self.db.profile_of(caller.user_id).await?.address);
        let proof = self.login.prove(appid, &request.proof, Some(&own), client_ip).await?;
        if let Err(e) = proof.require_fresh(self.db.clock().now(), MAX_ID_TOKEN_AGE_TO_DELETE_SECS) {
            self.login.release(&proof).await;
            return Err(e);
        }
        let linked = self.db.linked_addresses(caller.user_id).await?;
        if proof.address != own && !linked.iter().any(|linked| linked.address == proof.address.as_str()) {
            self.login.release(&proof).await;
            return Err(ApiError::new(ErrorCode::BadParam, "the proof is for an address that is not this account's own or linked"));
        }
        match self.delete(caller.user_id, "user").await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::new(ErrorCode::AuthFail, "the account is already deleted")),
            Err(e) => {
                // The code was not used up: a retry with it works.
                self.login.release(&proof).await;
                Err(e)
            }
        }
    }

    /// Deletes the account of user `user_id` (every row of theirs, and their photo file when
    /// nothing else refers to it) and queues the platform's `userdel`; false when there is no
    /// such user. `by` (`user` or `operator`) goes to the audit trail.
    pub async fn delete(&self, user_id: i64, by: &str) -> Result<bool, ApiError> {
        let Some(deleted) = self.db.delete_account(user_id).await? else { return Ok(false) };
        if let Err(e) = self.db.audit(&deleted.address, audit::ACCOUNT_DELETED, by.to_string()).await {
            tracing::warn!(user_id, "an account was deleted but the audit trail could not record it: {e}");
        }
        self.files.release(&deleted.photo).await;
        tracing::info!(user_id, "account deleted");
        Ok(true)
    }
}
