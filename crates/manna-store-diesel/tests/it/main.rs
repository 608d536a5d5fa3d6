//! Integration tests against real PostgreSQL (127.0.0.1:5432, database
//! `test`) and SQLite files. Each PostgreSQL test works in its own schema, so
//! tests run in parallel without colliding.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[macro_use]
mod support;

mod column_store;
mod conformance;
mod encrypted;
mod engine;
mod fence;
mod idempotent;
mod identifiers;
mod lock;
mod pool;
mod props;
mod versioned;
