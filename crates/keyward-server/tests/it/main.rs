//! keywardd end to end: a real server on loopback, a real SQLite file, software authenticators
//! standing in for the finger on the key. One binary (matklad): modules below.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod admin;
mod agents;
mod api;
mod attacks;
mod backup;
mod bound;
mod browser;
mod browser_binding;
mod check_config;
mod erasure;
mod flows;
mod fuzz;
mod instances;
mod limits;
mod log;
mod logs;
mod migrate;
mod no_backdoor;
mod oidc;
mod persistence;
mod processes;
mod recovery;
mod stream;
