//! Crypto providers: the implementation of the primitives under the
//! envelope, chosen per keyring (see docs/crypto-providers.md).
//!
//! The envelope, its header, the AAD, the nonce draw, the base64 body, the
//! key ids, the Fernet token format and every error are manna's own code and
//! the same whatever the provider; a provider only runs the primitives:
//! AES-256-GCM for the envelope, HMAC-SHA256 and AES-128-CBC for reading
//! Fernet. So a token made through one provider is byte for byte the token
//! the other makes for the same key, nonce, AAD and plaintext, and each opens
//! the other's (`testing::provider_conformance`, feature `testing`, checks
//! a provider against known answers and the format's test vectors).
//!
//! - [`RustCrypto`]: the RustCrypto crates (`aes-gcm`, `aes`, `cbc`, `hmac`,
//!   `sha2`). Pure Rust, builds anywhere `rustc` does. Always compiled in.
//! - `AwsLcRs` (feature `aws-lc-rs`): AWS-LC through `aws-lc-rs`, C and
//!   assembly. Several times faster on large values; needs a C compiler
//!   to build.
//!
//! A keyring uses the provider given to
//! [`KeyringBuilder::provider`](crate::KeyringBuilder::provider), or else the
//! process default: the one [`install_default`] installed, or else the
//! built-in default — `AwsLcRs` when the `aws-lc-rs` feature is compiled in,
//! [`RustCrypto`] otherwise. Since both write the same bytes, the choice is
//! about speed and build requirements, never about compatibility.
//!
//! ```
//! use manna_crypto::provider::{self, RustCrypto};
//! use manna_crypto::{AesKey, Keyring};
//!
//! let keyring = Keyring::builder()
//!     .provider(&RustCrypto)
//!     .primary(AesKey::generate())
//!     .build()?;
//! assert_eq!(keyring.provider().name(), "rustcrypto");
//! // Without `.provider(..)`, the process default.
//! assert_eq!(Keyring::new(AesKey::generate()).provider().name(), provider::default_provider().name());
//! # Ok::<(), manna_crypto::KeyError>(())
//! ```

use std::fmt;
use std::sync::OnceLock;

use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::key::KEY_LEN;

#[cfg(feature = "aws-lc-rs")]
mod aws_lc;
mod rust_crypto;

#[cfg(feature = "aws-lc-rs")]
pub use aws_lc::AwsLcRs;
pub use rust_crypto::RustCrypto;

/// Length of each half of a Fernet key: the HMAC-SHA256 signing key and the
/// AES-128 encryption key.
pub const FERNET_HALF_LEN: usize = 16;
/// Length of an HMAC-SHA256 tag.
pub const HMAC_SHA256_LEN: usize = 32;
/// Length of an AES block (and of an AES-CBC IV).
pub const AES_BLOCK_LEN: usize = 16;

/// A primitive failed: authentication failed, the padding was wrong, or
/// the input was malformed. Deliberately carries nothing more, so that no
/// provider can tell a caller (or an attacker) which: the keyring turns
/// every one of them into the same opaque
/// [`DecryptError::Authentication`](crate::DecryptError::Authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cryptographic operation failed")]
pub struct Unspecified;

/// A crypto provider: makes the keyed primitive objects the keyring keeps.
///
/// Implementations must be deterministic functions of their inputs (the
/// envelope depends on it) and must wipe the key material they keep when
/// the returned objects are dropped. `Debug` must not show key material.
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// A short stable name: `"rustcrypto"`, `"aws-lc-rs"`.
    fn name(&self) -> &'static str;

    /// Prepares an AES-256-GCM key (the key schedule is expanded once).
    fn aes256gcm(&self, key: &[u8; KEY_LEN]) -> Box<dyn Aes256GcmKey>;

    /// Prepares the two halves of a Fernet key for reading Fernet tokens:
    /// the HMAC-SHA256 signing key and the AES-128-CBC encryption key.
    fn fernet(
        &self,
        signing_key: &[u8; FERNET_HALF_LEN],
        encryption_key: &[u8; FERNET_HALF_LEN],
    ) -> Box<dyn FernetPrimitives>;
}

/// An AES-256-GCM key prepared by a [`Provider`], 96-bit nonces and
/// 128-bit tags.
pub trait Aes256GcmKey: Send + Sync {
    /// Encrypts `in_out` in place, authenticating `aad`, and returns the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified>;

    /// Decrypts `ciphertext ‖ tag` in place, authenticating `aad`, and
    /// returns the plaintext length (`in_out.len() - TAG_LEN`; the plaintext
    /// is at the start of `in_out`). On failure `in_out` holds unspecified
    /// bytes that are not the plaintext.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, Unspecified>;

    /// Decrypts `ciphertext ‖ tag` from `input` into `out` (exactly
    /// `input.len() - TAG_LEN` long). The default copies the input into
    /// `out` and opens it in place; a provider with an out-of-place
    /// primitive saves that copy.
    fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(), Unspecified> {
        let ct_len = input.len().checked_sub(TAG_LEN).ok_or(Unspecified)?;
        if out.len() != ct_len {
            return Err(Unspecified);
        }
        let (ct, tag) = input.split_at(ct_len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Unspecified)?;
        self.open_detached(nonce, aad, ct, tag, out)
    }

    /// Decrypts `ciphertext` with a separate `tag` into `out` (as long as
    /// the ciphertext). The building block of [`Aes256GcmKey::open_to`].
    fn open_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Unspecified>;
}

/// The primitives under Fernet decryption, keyed by a Fernet key's halves.
pub trait FernetPrimitives: Send + Sync {
    /// Checks, in constant time, that `tag` is HMAC-SHA256 of `data` under
    /// the signing key.
    fn verify_hmac_sha256(
        &self,
        data: &[u8],
        tag: &[u8; HMAC_SHA256_LEN],
    ) -> Result<(), Unspecified>;

    /// Decrypts AES-128-CBC with PKCS#7 padding in place under the
    /// encryption key and returns the unpadded length. `in_out` must be a
    /// non-zero whole number of blocks.
    fn aes128_cbc_decrypt_in_place(
        &self,
        iv: &[u8; AES_BLOCK_LEN],
        in_out: &mut [u8],
    ) -> Result<usize, Unspecified>;
}

static DEFAULT: OnceLock<&'static dyn Provider> = OnceLock::new();

/// Installs `provider` as the process default, used by every keyring built
/// without [`KeyringBuilder::provider`](crate::KeyringBuilder::provider).
/// Like rustls' `CryptoProvider::install_default`: the first call wins, and
/// so does the built-in default once a keyring has used it.
///
/// Returns `Err` with the provider already in place if there is one.
pub fn install_default(provider: &'static dyn Provider) -> Result<(), &'static dyn Provider> {
    let mut installed = false;
    let current = DEFAULT.get_or_init(|| {
        installed = true;
        provider
    });
    if installed {
        Ok(())
    } else {
        Err(*current)
    }
}

/// The process default: the installed provider, or else the built-in one
/// (`AwsLcRs` when the `aws-lc-rs` feature is compiled in,
/// [`RustCrypto`] otherwise), which is then fixed for the process.
pub fn default_provider() -> &'static dyn Provider {
    *DEFAULT.get_or_init(built_in_default)
}

/// The provider chosen by the crate's features alone.
pub fn built_in_default() -> &'static dyn Provider {
    #[cfg(feature = "aws-lc-rs")]
    {
        &AwsLcRs
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        &RustCrypto
    }
}

/// Every provider compiled into this build, the built-in default first.
pub fn all() -> Vec<&'static dyn Provider> {
    vec![
        #[cfg(feature = "aws-lc-rs")]
        &AwsLcRs,
        &RustCrypto,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_default_is_compiled_in() {
        assert_eq!(all()[0].name(), built_in_default().name());
    }
}
