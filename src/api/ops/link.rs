//! `op=link`: links a further address, proven by a code sent to it or an ID token, to
//! the caller's account.

use super::common::{self, ID_TOKEN_FIELD, LINKED_FIELD, NONCE_FIELD, PROVIDER_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::authenticators::ProofFields;

pub struct Link;

/// The fields of `op=link` besides the token.
pub struct LinkRequest<'a> {
    /// The app the code was asked for.
    pub appid: Option<&'a str>,
    /// The address to link and what proves it.
    pub proof: ProofFields<'a>,
}

impl ApiOp for Link {
    type ActsFor = Caller;
    type Request<'a> = LinkRequest<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Links a further address to the caller's account: first start a login for it (op=login with its phone or email), then send its code here; or send an ID token. From then on a login through it is the same user, its token minted with linkto = the account's own address.",
        request: &[
            TOKEN_FIELD,
            ("appid", "string", "The app the code was asked for."),
            ("phone", "string", "The phone to link, with otp."),
            ("email", "string", "The e-mail address to link, with otp."),
            ("otp", "string", "The code the login start for that address sent (or code)."),
            ("challenge", "string", "The challenge id of that start reply, when the app has it."),
            PROVIDER_FIELD,
            ID_TOKEN_FIELD,
            NONCE_FIELD,
        ],
        required: &["appid"],
        reply: &[LINKED_FIELD],
    };

    fn read(sent: Sent<'_>) -> LinkRequest<'_> {
        LinkRequest { appid: sent.text("appid"), proof: sent.proof() }
    }

    async fn answer(state: &AppState, caller: Caller, request: Self::Request<'_>, client_ip: &str) -> Result<Fields, ApiError> {
        Ok(common::linked(&state.links.link(&caller, request.appid, request.proof, client_ip).await?))
    }
}
