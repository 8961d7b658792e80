//! `op=devices`: the caller's live sessions and linked addresses.

use super::common::{self, LINKED_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;

pub struct Devices;

impl ApiOp for Devices {
    type ActsFor = Caller;
    type Request<'a> = ();

    const DOC: OpDoc = OpDoc {
        summary: "The caller's live sessions, most recently used first, without tokens.",
        request: &[TOKEN_FIELD],
        required: &[],
        reply: &[
            (
                "devices",
                "array",
                "Entries with device, appid, created, last_seen, current (the session making the request), push (a push token is registered) and dt.",
            ),
            LINKED_FIELD,
        ],
    };

    fn read(_: Sent<'_>) {}

    async fn answer(state: &AppState, caller: Caller, _: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let devices = state.sessions.devices(&caller).await?;
        let mut fields = common::linked(&devices.linked);
        fields.insert("devices".into(), serde_json::to_value(devices.sessions).expect("sessions serialize"));
        Ok(fields)
    }
}
