//! Encryption status (what `manna info` prints).
//!
//! Computing a status ([`Keyring::status`](crate::Keyring::status)) also
//! sets the key gauges of [`metrics`](crate::metrics): age, time to expiry
//! and role of every configured key.

use serde::Serialize;
use time::OffsetDateTime;

use crate::key::KeyId;
use crate::keyring::{KeyMetadata, NONCE_LIMIT, NONCE_WARNING_THRESHOLD};

/// Age after which a key is due for rotation (90 days).
pub const ROTATION_DUE_AFTER: time::Duration = time::Duration::days(90);

/// How long before a stated expiry a key is warned about (30 days).
pub const EXPIRY_WARNING_BEFORE: time::Duration = time::Duration::days(30);

/// The role of a key in a keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyRole {
    /// The AES key that encrypts.
    Primary,
    /// A previous AES key, used only to decrypt.
    DecryptOnly,
    /// A legacy Fernet key (decrypts; the first one encrypts for rollback).
    Fernet,
}

impl KeyRole {
    /// The role as its snake-case name (`primary`, `decrypt_only`,
    /// `fernet`): the `role` label of the key gauges.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Primary => "primary",
            KeyRole::DecryptOnly => "decrypt_only",
            KeyRole::Fernet => "fernet",
        }
    }
}

/// Status of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyStatus {
    /// The key id (Fernet keys: fingerprint).
    pub key_id: KeyId,
    /// The key's role.
    pub role: KeyRole,
    /// Encryptions under this key counted by this process.
    pub encryptions: u64,
    /// When the key was created, if known (key files).
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When the key expires, if stated.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Age in whole days, if the creation date is known.
    pub age_days: Option<i64>,
    /// Warnings about this key (rotation due, expiry near, nonce budget).
    pub warnings: Vec<String>,
}

impl KeyStatus {
    pub(crate) fn new(
        key_id: KeyId,
        role: KeyRole,
        encryptions: u64,
        metadata: KeyMetadata,
        now: OffsetDateTime,
    ) -> Self {
        let mut warnings = Vec::new();
        let age = metadata.created_at.map(|c| now - c);
        if let Some(age) = age {
            if role == KeyRole::Primary && age >= ROTATION_DUE_AFTER {
                warnings.push(format!(
                    "key {key_id} is {} days old: rotation is due after {} days",
                    age.whole_days(),
                    ROTATION_DUE_AFTER.whole_days()
                ));
            }
        }
        if let Some(expires) = metadata.expires_at {
            if expires <= now {
                warnings.push(format!("key {key_id} expired on {}", date(expires)));
            } else if expires - now <= EXPIRY_WARNING_BEFORE {
                warnings.push(format!(
                    "key {key_id} expires on {} (in {} days)",
                    date(expires),
                    (expires - now).whole_days()
                ));
            }
        }
        if encryptions >= NONCE_WARNING_THRESHOLD {
            warnings.push(format!(
                "key {key_id} has encrypted {encryptions} values in this process: \
                 rotate before the 2^32 random-nonce limit"
            ));
        }
        KeyStatus {
            key_id,
            role,
            encryptions,
            created_at: metadata.created_at,
            expires_at: metadata.expires_at,
            age_days: age.map(|a| a.whole_days()),
            warnings,
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn date(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The encryption status: what is configured and what needs attention.
/// Serializes to the JSON that `manna info --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// Whether a primary key is configured.
    pub initialized: bool,
    /// Always `"AES-256-GCM"`.
    pub algorithm: &'static str,
    /// Envelope format version written (`1`).
    pub format_version: u8,
    /// The primary key id, if initialized.
    pub primary_key_id: Option<KeyId>,
    /// Ids of the decrypt-only AES keys.
    pub decrypt_only_key_ids: Vec<KeyId>,
    /// Whether legacy Fernet tokens can be read (Fernet keys configured and
    /// `fernet_until`, if set, not passed).
    pub fernet_fallback: bool,
    /// Fingerprint ids of the Fernet keys, in order.
    pub fernet_key_ids: Vec<KeyId>,
    /// When Fernet reading ends (the keyring's `fernet_until`), if set.
    #[serde(with = "time::serde::rfc3339::option")]
    pub fernet_until: Option<OffsetDateTime>,
    /// Whether plaintext values are accepted when decrypting.
    pub accept_plaintext: bool,
    /// Encryptions per key at which a warning is raised (2^31).
    pub nonce_warning_threshold: u64,
    /// Encryptions per key after which encryption is refused (2^32).
    pub nonce_limit: u64,
    /// Per-key details, primary first, then decrypt-only, then Fernet.
    pub keys: Vec<KeyStatus>,
    /// All warnings: the per-key ones, flattened, then one while Fernet
    /// fallback is on (or Fernet keys are configured after `fernet_until`)
    /// and one while plaintext is accepted: the ones
    /// [`Status::acceptance_warnings`] returns.
    pub warnings: Vec<String>,
}

impl Status {
    /// The status when no key is configured (for `info` without keys).
    pub fn uninitialized() -> Self {
        Status {
            initialized: false,
            algorithm: crate::ALGORITHM,
            format_version: 1,
            primary_key_id: None,
            decrypt_only_key_ids: Vec::new(),
            fernet_fallback: false,
            fernet_key_ids: Vec::new(),
            fernet_until: None,
            accept_plaintext: false,
            nonce_warning_threshold: NONCE_WARNING_THRESHOLD,
            nonce_limit: NONCE_LIMIT,
            keys: Vec::new(),
            warnings: vec!["no primary AES-256 key configured".to_owned()],
        }
    }

    pub(crate) fn from_keys(
        primary: KeyId,
        decrypt_only: Vec<KeyId>,
        fernet: Vec<KeyId>,
        fernet_until: Option<OffsetDateTime>,
        accept_plaintext: bool,
        keys: Vec<KeyStatus>,
        now: OffsetDateTime,
    ) -> Self {
        let mut status = Status {
            initialized: true,
            algorithm: crate::ALGORITHM,
            format_version: 1,
            primary_key_id: Some(primary),
            decrypt_only_key_ids: decrypt_only,
            fernet_fallback: !fernet.is_empty() && fernet_until.is_none_or(|until| now < until),
            fernet_key_ids: fernet,
            fernet_until,
            accept_plaintext,
            nonce_warning_threshold: NONCE_WARNING_THRESHOLD,
            nonce_limit: NONCE_LIMIT,
            warnings: Vec::new(),
            keys,
        };
        for key in &status.keys {
            crate::metrics::key_gauges(key, now);
        }
        status.warnings = status
            .keys
            .iter()
            .flat_map(|k| k.warnings.iter().cloned())
            .chain(status.acceptance_warnings())
            .collect();
        status
    }

    /// The warnings about what the keyring accepts besides its AES
    /// envelopes: one while Fernet fallback is on (Fernet tokens carry no
    /// AAD, so one copied from another column, row or backup is accepted;
    /// until when, if `fernet_until` is set), or while Fernet keys stay
    /// configured after `fernet_until`; one while plaintext is accepted.
    /// `info` prints them with the others; `migrate` prints them on stderr
    /// before it starts.
    pub fn acceptance_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.fernet_fallback {
            let until = match self.fernet_until {
                Some(until) => format!(" until {}", rfc3339(until)),
                None => " (no fernet_until set)".to_owned(),
            };
            warnings.push(format!(
                "Fernet fallback is on{until}: Fernet tokens carry no AAD, so a token copied \
                 from another column, row or backup is accepted (and re-encrypted under this \
                 column's AAD); remove the Fernet keys once `keys retire-check fernet` passes"
            ));
        } else if let (false, Some(until)) = (self.fernet_key_ids.is_empty(), self.fernet_until) {
            warnings.push(format!(
                "Fernet reading ended at {} (fernet_until): Fernet tokens are refused; rows \
                 still in Fernet cannot be read or migrated (`keys retire-check fernet` counts \
                 them)",
                rfc3339(until)
            ));
        }
        if self.accept_plaintext {
            warnings.push(
                "plaintext acceptance is on: values that are not encrypted are returned as \
                 they are; turn it off once the column is migrated"
                    .to_owned(),
            );
        }
        warnings
    }
}
