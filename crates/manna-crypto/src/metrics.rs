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
