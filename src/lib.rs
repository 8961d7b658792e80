//! otpgate: one-time-password login backend for messenger apps.
//!
//! The crate is built in layers; each imports only from the layers above it here:
//!
//! | layer | holds |
//! |---|---|
//! | [`config`] | the settings, read from the environment; imports nothing of the crate |
//! | [`domain`] | addresses, codes and keys, phone policy, templates, limits, errors, metrics |
//! | [`store`] | the data, in SQLite or PostgreSQL: every query, both schemas, the Redis rate-limit buckets, files on disk |
//! | [`delivery`] | senders, the code courier, the notification outbox, the platform's `useradd`, CAPTCHA |
//! | [`service`] | login, sessions, profiles, contact sync, groups, files, linked addresses, accounts: a struct each, held in the state |
//! | [`api`] | HTTP: routes, request parsing, the ops (a file each), replies, middleware, health, metrics, OpenAPI |
//! | [`runtime`] | building it all from the configuration, background tasks, the command line |
//!
//! A new op goes in `service` (its logic, a method of a service) and in a file of
//! `api::ops` (its fields, reply and description) with its line in the table there; a new
//! sender in `delivery::senders`; a new table in a migration step of each backend, and its queries in `store`.
//! `.ci/check-layers` fails the build on an import against this order.

pub mod api;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod runtime;
pub mod service;
pub mod store;

pub use api::AppState;
