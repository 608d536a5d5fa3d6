//! Error types. None of them ever carries key material or plaintext.

use std::fmt;

use crate::key::KeyId;

/// Which kind of key a [`KeyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// An AES-256-GCM key (`MANNA_ENCRYPTION_KEY_AES256`, `…_PREVIOUS`).
    Aes256,
    /// A legacy Fernet key (`MANNA_ENCRYPTION_KEY`).
    Fernet,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Aes256 => "AES-256 key",
            KeyKind::Fernet => "Fernet key",
        })
    }
}

/// A key could not be parsed, or a keyring could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key text is empty.
    #[error("{kind} is empty: expected base64 of 32 bytes")]
    Empty {
        /// The kind of key expected.
        kind: KeyKind,
    },
    /// The key text is not base64.
    #[error(
        "{kind} is not valid base64: expected base64 (standard or URL-safe alphabet) of 32 bytes"
    )]
    InvalidBase64 {
        /// The kind of key expected.
        kind: KeyKind,
    },
    /// The key decodes to the wrong number of bytes.
    #[error("{kind} decodes to {actual} bytes, expected 32")]
    WrongLength {
        /// The kind of key expected.
        kind: KeyKind,
        /// Number of bytes the text decoded to.
        actual: usize,
    },
    /// A ciphertext (an `mn1:` envelope or a Fernet token) was given where a
    /// key was expected.
    #[error("{kind} looks like an encrypted value (a token), not a key")]
    LooksLikeToken {
        /// The kind of key expected.
        kind: KeyKind,
    },
    /// The same 32 bytes are configured both as an AES-256 key and as a
    /// Fernet key. Both are 32 random bytes in base64, so a key in the wrong
    /// variable is only detectable this way; reusing one key for two
    /// algorithms is unsafe anyway.
    #[error(
        "the same key material is configured as AES-256 key {aes_key_id} and as a Fernet key: \
         the two must be different keys"
    )]
    AesKeyUsedAsFernetKey {
        /// Id of the AES key whose material is also a Fernet key.
        aes_key_id: KeyId,
    },
    /// Two keys of the keyring have the same id (the same key given twice).
    #[error("key {key_id} is configured more than once")]
    DuplicateKeyId {
        /// The duplicated id.
        key_id: KeyId,
    },
    /// A keyring needs a primary AES-256 key.
    #[error("no primary AES-256 key configured")]
    NoPrimaryKey,
    /// A key's stated id does not match the id derived from its material
    /// (key files state ids so that operators can cross-check them).
    #[error("key stated as {stated} has id {actual}: the key or its id is wrong")]
    KeyIdMismatch {
        /// The id written next to the key.
        stated: KeyId,
        /// The id derived from the key material.
        actual: KeyId,
    },
}

/// Encryption failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Fernet encryption (rollback) was requested but no Fernet key is configured.
    #[error("no Fernet key configured: writing Fernet (the rollback) needs one")]
    NoFernetKey,
    /// The plaintext is longer than AES-GCM allows (2^36 - 32 bytes).
    #[error("plaintext of {len} bytes exceeds the AES-GCM limit")]
    PlaintextTooLarge {
        /// Length of the rejected plaintext.
        len: usize,
    },
    /// The key has reached the NIST SP 800-38D limit of 2^32 encryptions
    /// with random nonces (counted in this process); rotate the key.
    #[error("key {key_id} has reached the 2^32 random-nonce encryption limit: rotate to a new primary key")]
    NonceLimitReached {
        /// The exhausted key.
        key_id: KeyId,
    },
    /// The primary key's stated expiry (`expires_at` in the key file) has
    /// passed: it still decrypts but no longer encrypts.
    #[error("primary key {key_id} expired on {expires_at}: it no longer encrypts (it still decrypts); make a new key primary and keep this one as decrypt_only")]
    PrimaryKeyExpired {
        /// The expired primary key.
        key_id: KeyId,
        /// Its stated expiry (RFC 3339).
        expires_at: String,
    },
    /// The keyring's `fernet_until` has passed: Fernet is no longer written
    /// (a rollback to Fernet is refused).
    #[error("Fernet ended at {until} (fernet_until): the keyring no longer writes Fernet tokens")]
    FernetEnded {
        /// The keyring's `fernet_until` (RFC 3339).
        until: String,
    },
}

impl CryptoError {
    /// A short, stable name of the failure (the `kind` label of
    /// [`ENCRYPT_FAILURES`](crate::metrics::ENCRYPT_FAILURES)).
    pub fn kind(&self) -> &'static str {
        match self {
            CryptoError::NoFernetKey => "no_fernet_key",
            CryptoError::PlaintextTooLarge { .. } => "plaintext_too_large",
            CryptoError::NonceLimitReached { .. } => "nonce_limit_reached",
            CryptoError::PrimaryKeyExpired { .. } => "primary_key_expired",
            CryptoError::FernetEnded { .. } => "fernet_ended",
        }
    }
}

/// Decryption failed. Authentication failures are one opaque variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// Neither an AES-256-GCM envelope nor a Fernet token, nor acceptable
    /// plaintext (for example a damaged or truncated token).
    #[error(
        "Unknown encryption format: the value is neither an AES-256-GCM envelope (mn1:…) \
         nor a Fernet token (gAAAAA…)"
    )]
    UnknownFormat,
    /// An envelope of a later format version than this build reads.
    #[error(
        "envelope format version {version} is not supported by this build (it reads version 1)"
    )]
    UnsupportedVersion {
        /// The version found in the prefix: 1 to 9 ASCII digits, as stored.
        version: String,
    },
    /// The envelope names a key that is not in the keyring.
    #[error(
        "value is encrypted under AES key {key_id}, which is not configured \
         (configured: {})",
        KeyId::list(configured)
    )]
    UnknownKey {
        /// The key id named in the envelope header.
        key_id: KeyId,
        /// Ids of the AES keys the keyring has (primary first).
        configured: Vec<KeyId>,
    },
    /// A Fernet token, but the keyring has no Fernet key.
    #[error("value is a legacy Fernet token but no Fernet key is configured")]
    NoFernetKey,
    /// Authentication failed: wrong key, wrong AAD, or a modified value.
    #[error("decryption failed: the value is not authentic under the configured key(s) and AAD (wrong key, wrong AAD, or modified data)")]
    Authentication,
    /// The value looks like unencrypted text and the keyring does not accept
    /// plaintext.
    #[error(
        "Unknown encryption format: the value is not encrypted (it looks like plain text) \
         and the keyring does not accept plaintext"
    )]
    PlaintextNotAccepted,
    /// An authentic Fernet token whose timestamp is outside the accepted
    /// window: older than the TTL, or more than 60 s in the future.
    #[error("Fernet token timestamp is outside the accepted window (TTL expired or more than 60 s in the future)")]
    FernetTimestamp,
    /// A Fernet token, and the keyring's `fernet_until` has passed: Fernet
    /// reading ended then, by policy. No Fernet key is tried, so this says
    /// nothing about the token itself.
    #[error(
        "value is a legacy Fernet token and Fernet reading ended at {until} (fernet_until): \
         migrate such rows before that date, or move the date while they are migrated"
    )]
    FernetEnded {
        /// The keyring's `fernet_until` (RFC 3339).
        until: String,
    },
}

impl DecryptError {
    /// A short, stable, data-free name for the failure kind (used as a
    /// metric label and in reports): `unknown_format`, `unsupported_version`,
    /// `unknown_key`, `no_fernet_key`, `authentication`,
    /// `plaintext_not_accepted`, `fernet_timestamp`, `fernet_ended`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecryptError::UnknownFormat => "unknown_format",
            DecryptError::UnsupportedVersion { .. } => "unsupported_version",
            DecryptError::UnknownKey { .. } => "unknown_key",
            DecryptError::NoFernetKey => "no_fernet_key",
            DecryptError::Authentication => "authentication",
            DecryptError::PlaintextNotAccepted => "plaintext_not_accepted",
            DecryptError::FernetTimestamp => "fernet_timestamp",
            DecryptError::FernetEnded { .. } => "fernet_ended",
        }
    }
}
