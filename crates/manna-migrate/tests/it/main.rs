//! Integration tests of the engine against the in-memory store.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod support;

mod concurrency;
mod locks;
mod metrics;
mod migrate;
mod mocks;
mod preflight;
mod properties;
mod report;
mod resume;
mod shards;
mod verdicts;
