//! Integration tests of manna-lock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod conformance;
mod deadlines;
mod handoff;
mod manager;
mod metrics;
mod mock;
mod model;
mod retry;
