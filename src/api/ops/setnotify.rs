//! `op=setnotify`: keeps this device's push registration with its session.

use super::common::TOKEN_FIELD;
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::sessions::SetNotify as SetNotifyFields;

pub struct SetNotify;

impl ApiOp for SetNotify {
    type ActsFor = Caller;
    type Request<'a> = SetNotifyFields<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Keep this device's push registration with its session (replaced by the next call, removed at logout; an empty notifytoken removes it).",
        request: &[
            TOKEN_FIELD,
            ("notifytoken", "string", "The push service's token for the device, at most 4096 characters."),
            ("fcmid", "string", "The push sender id."),
            ("dt", "string", "The platform SDK's device type."),
        ],
        required: &[],
        reply: &[],
    };

    fn read(sent: Sent<'_>) -> SetNotifyFields<'_> {
        SetNotifyFields { notify_token: sent.text("notifytoken"), fcm_id: sent.text("fcmid"), device_type: sent.text("dt") }
    }

    async fn answer(state: &AppState, caller: Caller, fields: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        state.sessions.set_notify(&caller, fields).await?;
        Ok(Fields::new())
    }
}
