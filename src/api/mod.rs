//! The only layer that sees HTTP: routes, request parsing, the ops (a file each in
//! `ops/`, named once in its table), replies, middleware, health, metrics, the OpenAPI
//! document and the providers' delivery receipts.

pub mod admin;
pub mod fuzz_targets;
pub mod health;
pub mod http;
pub mod op;
pub mod openapi;
pub mod ops;
pub mod receipts;
pub mod reply;
pub mod request;
pub mod request_log;
pub mod server;
mod state;

pub use state::{AppState, HttpSettings, UploadsPerUser};
