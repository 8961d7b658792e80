//! Plain rules of the service: what an address, a code, a key, a valid phone, a message and a limit are, and the error codes. No HTTP, no SQL.

pub mod account;
pub mod address;
pub mod app_settings;
pub mod breaker;
pub mod client_ip;
pub mod clock;
pub mod error;
pub mod groups;
pub mod guesses;
pub mod images;
pub mod keys;
pub mod metrics;
pub mod notices;
pub mod otp;
pub mod phone;
pub mod ratelimit;
pub mod recent;
pub mod start_limits;
pub mod templates;
