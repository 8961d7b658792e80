//! The operator API's work: finding a user by phone, e-mail or uid, showing their
//! sessions, and revoking them. Each look at a user's data and each revoke goes in the
//! audit trail, under the user's address and in the operator trail, naming the operator.

use std::fmt;
use std::sync::Arc;

use crate::domain::address::{self, Address};
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::links::{Linked, Links};
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

/// Who acts through the operator API, as the audit trail names them: the one operator
/// credential there is (ADMIN_TOKEN, never its value) and the client IP that presented it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    client_ip: String,
}

impl Operator {
    pub fn from_client_ip(client_ip: String) -> Operator {
        Operator { client_ip }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operator (ADMIN_TOKEN) from {}", self.client_ip)
    }
}

/// How a lookup named the user, as the trail keeps it: addresses masked, a uid not kept.
fn looked_up_by(key: &UserKey) -> String {
    match key {
        UserKey::Address(stored) => {
            let address = Address::from_stored(stored);
            format!("{} {}", address.field(), address.masked())
        }
        UserKey::Uid(_) => "uid".to_string(),
        UserKey::Id(id) => format!("id {id}"),
    }
}

/// A user as the operator trail names them: local id and masked address.
fn named(user: &UserRecord) -> String {
    format!("user {} ({})", user.id, Address::from_stored(&user.address).masked())
}

/// A user as an operator looks them up.
#[derive(Debug)]
pub struct UserDetails {
    pub user: UserRecord,
    /// Live sessions, most recently used first.
    pub sessions: Vec<OperatorSession>,
    pub linked: Vec<Linked>,
}

/// The operator API's work on users, sessions and the audit trail.
pub struct Operators {
    db: Arc<Db>,
    links: Arc<Links>,
}

impl Operators {
    pub fn new(db: Arc<Db>, links: Arc<Links>) -> Operators {
        Operators { db, links }
    }

    /// The user, their live sessions and linked addresses; `None` when there is no such user.
    /// The lookup is recorded before anything is answered: no data is shown unrecorded.
    pub async fn user(&self, operator: &Operator, key: UserKey) -> Result<Option<UserDetails>, ApiError> {
        let by = looked_up_by(&key);
        let Some(user) = self.db.find_user(key).await? else {
            self.db.audit(audit::OPERATOR_TRAIL, audit::OPERATOR_LOOKUP, format!("{operator}: no user by {by}")).await?;
            return Ok(None);
        };
        self.db.audit(audit::OPERATOR_TRAIL, audit::OPERATOR_LOOKUP, format!("{operator}: {} by {by}", named(&user))).await?;
        self.db.audit(&user.address, audit::OPERATOR_LOOKUP, format!("{operator}: user")).await?;
        let sessions = self.db.user_sessions(user.id).await?;
        let linked = self.links.linked(user.id).await?;
        Ok(Some(UserDetails { user, sessions, linked }))
    }

    /// Ends one of the user's sessions (`session` is its id) or all of them. `None` when
    /// there is no such user.
    pub async fn revoke(&self, operator: &Operator, user_id: i64, session: Option<String>) -> Result<Option<usize>, ApiError> {
        let Some(user) = self.db.find_user(UserKey::Id(user_id)).await? else { return Ok(None) };
        let ended = self.db.revoke_sessions(user_id, session).await?;
        tracing::info!(user_id, ended, "an operator revoked sessions");
        self.db.audit(&user.address, audit::SESSIONS_REVOKED, format!("{operator}: ended {ended}")).await?;
        self.db.audit(audit::OPERATOR_TRAIL, audit::SESSIONS_REVOKED, format!("{operator}: ended {ended} of {}", named(&user))).await?;
        Ok(Some(ended))
    }

    /// The security events of the address a lookup names, newest first. The lookup is
    /// recorded after the read, so that it shows in the next one.
    pub async fn events(&self, operator: &Operator, key: UserKey) -> Result<Vec<AuditEvent>, ApiError> {
        let by = looked_up_by(&key);
        let address = match key {
            UserKey::Address(address) => address,
            UserKey::Uid(_) | UserKey::Id(_) => {
                return Err(ApiError::new(ErrorCode::BadParam, "give phone or email: events outlive users"))
            }
        };
        let events = self.db.audit_events(&address).await?;
        self.db.audit(audit::OPERATOR_TRAIL, audit::OPERATOR_LOOKUP, format!("{operator}: events of {by}")).await?;
        self.db.audit(&address, audit::OPERATOR_LOOKUP, format!("{operator}: events")).await?;
        Ok(events)
    }

    /// The operator API's own trail (failed logins, lookups, revokes), newest first.
    pub async fn operator_events(&self) -> Result<Vec<AuditEvent>, ApiError> {
        Ok(self.db.audit_events(audit::OPERATOR_TRAIL).await?)
    }
}
