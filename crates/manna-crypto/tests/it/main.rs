//! Integration tests of manna-crypto.
#![allow(clippy::unwrap_used)]

mod keyring;
