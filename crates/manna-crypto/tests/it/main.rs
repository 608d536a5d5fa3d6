//! Integration tests of manna-crypto.
#![allow(clippy::unwrap_used)]

mod fernet_spec;
mod format_vectors;
mod keyring;
mod python_tokens;
mod sources;
