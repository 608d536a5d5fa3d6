//! Integration tests of manna-crypto.
#![allow(clippy::unwrap_used)]

mod fernet_spec;
mod format_vectors;
mod keyring;
mod metrics;
mod props;
mod python_tokens;
mod sources;
