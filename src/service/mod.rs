//! The service's operations: login, sessions, profiles and contact sync.

pub mod contacts;
pub mod login;
pub mod sessions;
pub mod users;
