//! The service's operations: login (and the authenticators that prove an address),
//! sessions, profiles, contact sync, groups, files, linked addresses, accounts and the
//! operator API's work, and the providers' delivery receipts. Each service is a struct
//! (`LoginFlow`, `Sessions`, `Users`, `Contacts`, `Groups`, `Files`, `Links`, `Accounts`,
//! `Operators`, `Receipts`) built once by `runtime` and held in the API's state; it holds
//! what it needs (the database, and the other services it calls), so a caller needs only
//! its methods.

pub mod accounts;
pub mod authenticators;
pub mod codes;
pub mod contacts;
pub mod groups;
pub mod links;
pub mod login;
pub mod operators;
pub mod receipts;
pub mod sessions;
pub mod uploads;
pub mod users;

use crate::domain::error::ApiError;
use crate::store::StorageError;

/// A failed query, as the operations answer it: logged here, answered as `INTERNAL`
/// (the details stay in the log).
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        tracing::error!("database error: {e}");
        ApiError::internal()
    }
}

/// Longest appid, device id or challenge id a request may send.
const MAX_ID_CHARS: usize = 128;

/// A request field that was sent and is not blank, trimmed.
fn non_empty(field: Option<&str>) -> Option<&str> {
    field.map(str::trim).filter(|value| !value.is_empty())
}
