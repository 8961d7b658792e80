//! `op=deleteaccount`: the caller deletes their account, proving their address again.

use super::common::{ID_TOKEN_FIELD, NONCE_FIELD, PROVIDER_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::accounts::DeleteRequest;

pub struct DeleteAccount;

impl ApiOp for DeleteAccount {
    type ActsFor = Caller;
    type Request<'a> = DeleteRequest<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Deletes the caller's account: sessions, address book, profile, photo, push registrations and group memberships, and the user on the platform. First start a login for the caller's own phone or e-mail: its code proves the request (an account signed in with an ID token sends one issued within the last 5 minutes instead).",
        request: &[
            TOKEN_FIELD,
            ("appid", "string", "The app the code was asked for."),
            ("otp", "string", "The code the login start sent (or code)."),
            ("challenge", "string", "The challenge id of that start reply, when the app has it."),
            PROVIDER_FIELD,
            ID_TOKEN_FIELD,
            NONCE_FIELD,
        ],
        required: &["appid"],
        reply: &[],
    };

    fn read(sent: Sent<'_>) -> DeleteRequest<'_> {
        DeleteRequest { appid: sent.text("appid"), proof: sent.proof() }
    }

    async fn answer(state: &AppState, caller: Caller, delete: Self::Request<'_>, client_ip: &str) -> Result<Fields, ApiError> {
        state.accounts.delete_own(&caller, delete, client_ip).await?;
        Ok(Fields::new())
    }
}
