//! `op=login`: without a code, sends one; with it (or with an ID token instead), answers
//! the user's access token and what the apps build the user's profile and settings from.

use serde_json::json;

use super::common::{ID_TOKEN_FIELD, NONCE_FIELD, PROVIDER_FIELD};
use super::{Anyone, ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::config::Dialect;
use crate::domain::account::thumbnail_field;
use crate::domain::app_settings::AppReply;
use crate::domain::error::ApiError;
use crate::service::login::{LoggedIn, LoginOutcome, LoginRequest};

pub struct Login;

impl ApiOp for Login {
    type ActsFor = Anyone;
    type Request<'a> = LoginRequest<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Without otp/code: send a one-time code. With it: verify the code and return the user's access token. With provider and id_token instead: sign in with the ID token of a provider in OIDC_PROVIDERS, in one request.",
        request: &[
            ("appid", "string", "The app's id (e.g. its bundle id); a code is valid only for the app that asked for it. At most 128 characters."),
            ("phone", "string", "The user's number; spaces, dashes, dots, parentheses, a leading + and leading zeros are dropped; 9-15 digits must remain."),
            ("email", "string", "Instead of phone, for e-mail logins."),
            ("name", "string", "Optional display name (at most 64 characters), passed to upstream useradd."),
            ("otp", "string", "The code, when verifying."),
            ("code", "string", "Older name of otp."),
            ("device", "string", "Optional installation id for multi-device logins (at most 128 characters)."),
            ("challenge", "string", "The challenge id of the start reply, when verifying: the guess is bound to that code and counted apart from guesses without it. Required when REQUIRE_CHALLENGE is on."),
            ("channel", "string", "Start of a phone login, optional: sms, whatsapp or voice. The route's instances of that channel are tried first, then the rest of the route; a channel the number's route lacks is refused (BADPARAM). A start that names another channel than the pending code's last message, after OTP_RESEND_SECS, sends that same code again over it (the challenge of this reply is the one to send back)."),
            PROVIDER_FIELD,
            ID_TOKEN_FIELD,
            NONCE_FIELD,
        ],
        required: &["appid"],
        reply: &[
            ("challenge", "string", "Start only: an id to send back with the code (none for TEST_OTPS numbers)."),
            ("channel", "string", "Start of a phone login: sms, whatsapp or voice, the channel that carried the code (or, when its delivery has not ended yet, that is tried first). In the mesibo dialect only when the request named a channel."),
            ("title", "string", "Start only, when APP_SETTINGS sets start.title: the title of the notice below."),
            ("message", "string", "Start only, when APP_SETTINGS sets start.message: a notice the Android app shows as an alert."),
            ("delay", "integer", "Start only, when APP_SETTINGS sets start.delay: milliseconds before the app shows the code field."),
            ("token", "string", "The user's access token (verify only)."),
            ("uid", "string", "Upstream user id, a number or a string as upstream gave it (verify only)."),
            ("phone", "string", "The normalised phone (verify of a phone login)."),
            ("email", "string", "The normalised e-mail address (verify of an e-mail login, or of an ID token whose provider signs in by e-mail)."),
            ("account", "string", "provider:subject (an ID token whose provider signs in by subject)."),
            ("cc", "string", "The phone's country calling code, e.g. \"44\"; empty for e-mail (verify only)."),
            ("name", "string", "The user's display name (verify only)."),
            ("status", "string", "The user's status text (verify only)."),
            ("photo", "string", "The user's photo, empty when none (verify only)."),
            ("urls", "object", "upload and download: where the app uploads files and finds downloads (verify only; APP_SETTINGS)."),
            ("share", "object", "text, subject and title of the app's invite (verify only; APP_SETTINGS)."),
            ("invite", "string", "The invite text (verify only; APP_SETTINGS)."),
            ("linked", "object", "Multi-device field passed through from upstream, when present."),
            ("linkto", "object", "Multi-device field passed through from upstream, when present."),
        ],
    };

    fn read(sent: Sent<'_>) -> LoginRequest<'_> {
        LoginRequest {
            appid: sent.text("appid"),
            name: sent.text("name"),
            device: sent.text("device"),
            captcha_token: sent.text("captcha_token"),
            channel: sent.text("channel"),
            proof: sent.proof(),
        }
    }

    async fn answer(state: &AppState, _: Anyone, login: Self::Request<'_>, client_ip: &str) -> Result<Fields, ApiError> {
        let app = state.apps.for_app(login.appid.map(str::trim).unwrap_or_default());
        // The mesibo apps send no channel: their start reply stays as it was.
        let tell_channel = state.http.dialect == Dialect::Json || login.channel.is_some_and(|channel| !channel.trim().is_empty());
        Ok(reply(state.login.login(login, client_ip).await?, &app, tell_channel))
    }
}

/// The login reply: a start may carry the app's notice, and the channel of its code when
/// `tell_channel`; a verify carries the token and what the apps build the user's own
/// profile and their invite and file-transfer settings from.
fn reply(outcome: LoginOutcome, app: &AppReply, tell_channel: bool) -> Fields {
    let mut fields = Fields::new();
    match outcome {
        LoginOutcome::CodeSent { challenge, channel } => {
            if let Some(challenge) = challenge {
                fields.insert("challenge".into(), challenge.into());
            }
            if let Some(channel) = channel.filter(|_| tell_channel) {
                fields.insert("channel".into(), channel.as_str().into());
            }
            if let Some(title) = &app.start_title {
                fields.insert("title".into(), title.as_str().into());
            }
            if let Some(message) = &app.start_message {
                fields.insert("message".into(), message.as_str().into());
            }
            if let Some(delay) = app.start_delay {
                fields.insert("delay".into(), delay.into());
            }
        }
        LoginOutcome::LoggedIn(logged_in) => {
            let LoggedIn { address, issued, calling_code, profile } = *logged_in;
            fields.insert("token".into(), issued.token.into());
            fields.insert(address.field().into(), address.as_str().into());
            fields.insert("uid".into(), issued.uid);
            fields.insert("cc".into(), calling_code.map(|code| code.to_string()).unwrap_or_default().into());
            fields.insert("name".into(), profile.name.into());
            fields.insert("status".into(), profile.status.into());
            fields.insert("photo".into(), profile.photo.into());
            if let Some(thumbnail) = &profile.thumbnail {
                fields.insert("tn".into(), thumbnail_field(thumbnail));
            }
            fields.insert("urls".into(), json!({ "upload": app.upload_url, "download": app.download_url }));
            fields.insert("share".into(), json!({ "text": app.share_text, "subject": app.share_subject, "title": app.share_title }));
            fields.insert("invite".into(), app.invite.as_str().into());
            if let Some(linked) = issued.linked {
                fields.insert("linked".into(), linked);
            }
            if let Some(linkto) = issued.linkto {
                fields.insert("linkto".into(), linkto);
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ops::Op;
    use crate::api::request::tests::params;
    use actix_web::http::header::HeaderMap;

    #[test]
    fn the_code_is_otp_or_code_and_login_reads_no_token() {
        let headers = HeaderMap::new();
        let sent = params(&[("code", "123456"), ("token", "t")]);
        assert_eq!(Login::read(Sent::new(&sent, &headers, None)).proof.code, Some("123456"));
        let sent = params(&[("code", "123456"), ("otp", "654321")]);
        assert_eq!(Login::read(Sent::new(&sent, &headers, None)).proof.code, Some("654321"), "otp comes first");
        assert!(!Op::Login.needs_session(), "login acts for anyone, and reads no token");
    }
}
