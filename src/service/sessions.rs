//! `op=logout` and `op=devices`.

use serde_json::{Map, Value};
use std::sync::Arc;

use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::store::Db;

/// `op=logout`: ends the token's session, or with `all` every session of its user.
/// An unknown or already ended token is not an error: the app's goal is reached.
pub async fn logout(db: &Arc<Db>, token_sha256: String, all: bool) -> Result<Map<String, Value>, ApiError> {
    let ended = db.end_sessions(token_sha256, all).await?;
    let mut fields = Map::new();
    fields.insert("ended".into(), ended.into());
    Ok(fields)
}

/// `op=devices`.
pub async fn devices(db: &Arc<Db>, caller: &Caller) -> Result<Map<String, Value>, ApiError> {
    let sessions = db.sessions_of(caller.clone(), db.clock().now()).await?;
    let mut fields = Map::new();
    fields.insert("devices".into(), sessions.into());
    Ok(fields)
}
