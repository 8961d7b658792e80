//! Where the API answers, and the ops it knows: [`Op`] is written by the table of ops in
//! [`crate::api::ops`], where each op has a file of its own.

pub use crate::api::ops::Op;

/// Where the API answers: the apps post to their configured base URL itself (current
/// apps), to `api.php` under it, or to `/messenger/api.php` (the 2021 apps).
pub const API_PATHS: &[&str] = &["/", "/api", "/api.php", "/messenger/api.php"];
