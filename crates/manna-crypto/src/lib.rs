#![doc = include_str!("../README.md")]

pub mod aad;
pub mod audit;
mod envelope;
mod error;
#[cfg(feature = "escrow")]
pub mod escrow;
mod fernet;
mod key;
mod key_file;
mod key_file_writer;
mod keyring;
pub mod metrics;
mod plaintext;
pub mod provider;
mod source;
mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use envelope::{
    inspect, inspect_bytes, text_header, text_header_key, Format, HEADER_LEN, NONCE_LEN, PREFIX_V1,
    TAG_LEN,
};
pub use error::{CryptoError, DecryptError, KeyError, KeyKind};
pub use fernet::MAX_CLOCK_SKEW;
pub use key::{AesKey, FernetKey, KeyId, ParseKeyIdError, KEY_ID_LEN, KEY_LEN};
pub use key_file::parse_key_file;
pub use key_file_writer::KeyFileWriter;
pub use keyring::{KeyMetadata, Keyring, KeyringBuilder, NONCE_LIMIT, NONCE_WARNING_THRESHOLD};
pub use plaintext::Plaintext;
pub use source::{
    EnvKeySource, FileKeySource, KeyFileFormat, KeySource, KeySourceError, StaticKeySource,
    ENV_AES_KEY, ENV_AES_PREVIOUS, ENV_FERNET_KEYS, ENV_FERNET_UNTIL,
};
pub use status::{KeyRole, KeyStatus, Status, EXPIRY_WARNING_BEFORE, ROTATION_DUE_AFTER};

/// The algorithm name reported by [`Status`]: `"AES-256-GCM"`.
pub const ALGORITHM: &str = "AES-256-GCM";

/// docs/crypto-providers.md, whose example runs as a doctest of this crate
/// (it installs the `aws-lc-rs` provider).
#[cfg(all(doctest, feature = "aws-lc-rs"))]
#[doc = include_str!("../../../docs/crypto-providers.md")]
pub struct CryptoProvidersGuide;

/// docs/operations.md, whose escrow example runs as a doctest of this crate.
#[cfg(all(doctest, feature = "escrow"))]
#[doc = include_str!("../../../docs/operations.md")]
pub struct OperationsGuide;

#[cfg(test)]
mod zeroize_features {
    /// The workspace turns on `aes`'s `zeroize` feature (and `ghash`'s and
    /// `polyval`'s, which have no marker trait to check): AES key schedules,
    /// the ones inside `aes-gcm` and Fernet's AES-128, are wiped on drop.
    #[test]
    fn aes_key_schedules_are_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<aes::Aes256>();
        wiped_on_drop::<aes::Aes128>();
    }
}
