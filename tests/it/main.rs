//! The integration tests, in one binary: one link instead of one per file. Tests that
//! need the process to themselves stay apart: `tests/allocator.rs` (SQLite takes the
//! allocator once per process) and `tests/metrics.rs` (counters are per process, and
//! other tests would move them).

mod accounts;
mod breakers;
mod channels;
mod common;
mod compatibility;
mod contacts;
mod courier;
mod delivery;
mod failover;
mod files;
mod fraud;
mod fuzz;
mod groups;
mod hardening;
mod instances;
mod links;
mod login_flow;
mod migration;
mod notifications;
mod oidc;
mod operations;
mod pgbouncer;
mod process;
mod protocol;
mod providers;
mod receipts;
mod redis_cluster;
mod redis_outage;
mod routes;
mod secrets_at_rest;
mod sessions;
mod shared_limits;
mod start_limits;
mod storage;
mod test_databases;
mod upload_limits;
mod upstream_failures;
