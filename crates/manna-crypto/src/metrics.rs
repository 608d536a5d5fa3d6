//! Metrics through the `metrics` facade. Labels hold only key ids (public
//! fingerprints), format names and failure kinds: never data.
//!
//! The per-key counter keys are built once per keyring (no allocation or
//! hashing per operation); the recorder is looked up on every call, so a
//! recorder installed after the keyring was built still sees everything.

use std::sync::Arc;

use metrics::{Key, Label, Level, Metadata};

/// Counter: values encrypted, labels `key_id`, `format` (`aes256gcm`|`fernet`).
pub const ENCRYPTIONS: &str = "manna_crypto_encryptions_total";
/// Counter: values decrypted, labels `key_id` (absent for plaintext),
/// `format` (`aes256gcm`|`fernet`|`plaintext`).
pub const DECRYPTIONS: &str = "manna_crypto_decryptions_total";
/// Counter: failed decryptions, label `kind` (see `DecryptError::kind`) and,
/// when the envelope names one, `key_id`: the id if it is a configured key,
/// else [`UNKNOWN_KEY_LABEL`] (stored data cannot create label values).
pub const DECRYPT_FAILURES: &str = "manna_crypto_decrypt_failures_total";
/// The `key_id` label of failures under a key the keyring does not have.
pub const UNKNOWN_KEY_LABEL: &str = "unknown";
/// Counter: failed encryptions, label `kind` (see `CryptoError::kind`:
/// `primary_key_expired`, `nonce_limit_reached`, `plaintext_too_large`,
/// …). Any increase deserves an alert: the value was not written.
pub const ENCRYPT_FAILURES: &str = "manna_crypto_encrypt_failures_total";
/// Gauge: seconds since a configured key was created, labels `key_id`,
/// `role` (`primary`|`decrypt_only`|`fernet`). Only for keys whose creation
/// date is known (key files). Set each time the status is computed
/// ([`Keyring::status`](crate::Keyring::status)).
pub const KEY_AGE_SECONDS: &str = "manna_crypto_key_age_seconds";
/// Gauge: seconds until a configured key expires (negative once expired),
/// labels `key_id`, `role`. Only for keys with a stated expiry. Set each
/// time the status is computed; alert when it drops below 30 days.
pub const KEY_EXPIRES_IN_SECONDS: &str = "manna_crypto_key_expires_in_seconds";
/// Gauge: `1` for each configured key, labels `key_id`, `role`: which key
/// is primary (`role="primary"`). Set each time the status is computed.
pub const KEY_INFO: &str = "manna_crypto_key_info";

/// Every metric name this crate records.
pub const ALL: &[&str] = &[
    ENCRYPTIONS,
    DECRYPTIONS,
    DECRYPT_FAILURES,
    ENCRYPT_FAILURES,
    KEY_AGE_SECONDS,
    KEY_EXPIRES_IN_SECONDS,
    KEY_INFO,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Prebuilt counter keys for one key of the keyring.
pub(crate) struct KeyCounters {
    encryptions: Key,
    decryptions: Key,
}

impl KeyCounters {
    pub(crate) fn new(key_id: &str, format: &'static str) -> Self {
        let key_id: Arc<str> = Arc::from(key_id);
        let labels = || {
            vec![
                Label::new("key_id", Arc::clone(&key_id)),
                Label::new("format", format),
            ]
        };
        KeyCounters {
            encryptions: Key::from_parts(ENCRYPTIONS, labels()),
            decryptions: Key::from_parts(DECRYPTIONS, labels()),
        }
    }

    pub(crate) fn encrypted(&self) {
        increment(&self.encryptions);
    }

    pub(crate) fn decrypted(&self) {
        increment(&self.decryptions);
    }
}

fn increment(key: &Key) {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
}

pub(crate) fn plaintext_passed() {
    metrics::counter!(DECRYPTIONS, "format" => "plaintext").increment(1);
}

pub(crate) fn failed(kind: &'static str, key_id: Option<String>) {
    match key_id {
        Some(id) => {
            metrics::counter!(DECRYPT_FAILURES, "kind" => kind, "key_id" => id).increment(1);
        }
        None => metrics::counter!(DECRYPT_FAILURES, "kind" => kind).increment(1),
    }
}

pub(crate) fn encrypt_failed(error: &crate::CryptoError) {
    metrics::counter!(ENCRYPT_FAILURES, "kind" => error.kind()).increment(1);
}

/// Sets the key gauges of one key (labels: its id and role, nothing else).
pub(crate) fn key_gauges(status: &crate::KeyStatus, now: time::OffsetDateTime) {
    let key_id = status.key_id.to_string();
    let role = status.role.as_str();
    metrics::gauge!(KEY_INFO, "key_id" => key_id.clone(), "role" => role).set(1.0);
    if let Some(created) = status.created_at {
        metrics::gauge!(KEY_AGE_SECONDS, "key_id" => key_id.clone(), "role" => role)
            .set((now - created).as_seconds_f64());
    }
    if let Some(expires) = status.expires_at {
        metrics::gauge!(KEY_EXPIRES_IN_SECONDS, "key_id" => key_id, "role" => role)
            .set((expires - now).as_seconds_f64());
    }
}
