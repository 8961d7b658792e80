//! The operator API's work: finding a user by phone, e-mail or uid, showing their
//! sessions, and revoking them.

use std::sync::Arc;

use crate::domain::address;
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::links::Linked;
use crate::store::audit;
use crate::store::operators::{UserKey, UserRecord};
use crate::store::records::{AuditEvent, OperatorSession};
use crate::store::Db;

/// Reads the one way of naming a user that a lookup carries.
pub fn user_key(phone: Option<&str>, email: Option<&str>, uid: Option<&str>) -> Result<UserKey, ApiError> {
    let bad = |why: &str| Err(ApiError::new(ErrorCode::BadParam, why.to_string()));
    match (super::non_empty(phone), super::non_empty(email), super::non_empty(uid)) {
        (Some(phone), None, None) => match address::normalize_phone(phone) {
            Some(phone) => Ok(UserKey::Address(phone)),
            None => bad("phone is not a phone number"),
        },
        (None, Some(email), None) => match address::normalize_email(email) {
            Some(email) => Ok(UserKey::Address(email)),
            None => bad("email is not an e-mail address"),
        },
        (None, None, Some(uid)) => Ok(UserKey::Uid(uid.to_string())),
        _ => bad("give exactly one of phone, email and uid"),
    }
}

/// The user, their live sessions and linked addresses; `None` when there is no such user.
pub async fn user(db: &Arc<Db>, key: UserKey) -> Result<Option<UserDetails>, ApiError> {
    let Some(user) = db.find_user(key).await? else { return Ok(None) };
    let sessions = db.user_sessions(user.id).await?;
    let linked = super::links::linked(db, user.id).await?;
    Ok(Some(UserDetails { user, sessions, linked }))
}

/// A user as an operator looks them up.
#[derive(Debug)]
pub struct UserDetails {
    pub user: UserRecord,
    /// Live sessions, most recently used first.
    pub sessions: Vec<OperatorSession>,
    pub linked: Vec<Linked>,
}

/// Ends one of the user's sessions (`session` is its id) or all of them. `None` when
/// there is no such user.
pub async fn revoke(db: &Arc<Db>, user_id: i64, session: Option<String>) -> Result<Option<usize>, ApiError> {
    let Some(user) = db.find_user(UserKey::Id(user_id)).await? else { return Ok(None) };
    let ended = db.revoke_sessions(user_id, session).await?;
    tracing::info!(user_id, ended, "an operator revoked sessions");
    db.audit(&user.address, audit::SESSIONS_REVOKED, ended.to_string()).await?;
    Ok(Some(ended))
}

/// The security events of the address a lookup names, newest first.
pub async fn events(db: &Arc<Db>, key: UserKey) -> Result<Vec<AuditEvent>, ApiError> {
    let address = match key {
        UserKey::Address(address) => address,
        UserKey::Uid(_) | UserKey::Id(_) => return Err(ApiError::new(ErrorCode::BadParam, "give phone or email: events outlive users")),
    };
    Ok(db.audit_events(&address).await?)
}
