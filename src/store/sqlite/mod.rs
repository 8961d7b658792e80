//! SQLite storage: the queries of each topic on one database file.

pub mod accounts;
pub mod audit;
pub mod contacts;
pub mod courier;
pub mod groups;
pub mod links;
pub mod operators;
pub mod outbox;
pub mod schema;
pub mod sessions;
pub mod users;
