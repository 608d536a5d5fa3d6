//! Integration tests of manna-crypto.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "escrow")]
mod escrow;
mod fernet_spec;
mod format_vectors;
mod keyring;
mod metrics;
mod props;
mod providers;
mod python_tokens;
mod sources;
