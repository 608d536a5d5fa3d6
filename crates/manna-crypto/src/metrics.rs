//! Metrics through the `metrics` facade. Labels hold only key ids (public
//! fingerprints), format names and failure kinds: never data.

use std::sync::Arc;

/// Counter: values encrypted, labels `key_id`, `format` (`aes256gcm`|`fernet`).
pub const ENCRYPTIONS: &str = "manna_crypto_encryptions_total";
/// Counter: values decrypted, labels `key_id`, `format` (`aes256gcm`|`fernet`|`plaintext`).
pub const DECRYPTIONS: &str = "manna_crypto_decryptions_total";
/// Counter: failed decryptions, label `kind` (see `DecryptError::kind`) and,
/// when the envelope names one, `key_id`.
pub const DECRYPT_FAILURES: &str = "manna_crypto_decrypt_failures_total";

pub(crate) fn encrypted(key_id: &Arc<str>, format: &'static str) {
    metrics::counter!(ENCRYPTIONS, "key_id" => Arc::clone(key_id), "format" => format).increment(1);
}

pub(crate) fn decrypted(key_id: Option<&Arc<str>>, format: &'static str) {
    match key_id {
        Some(id) => {
            metrics::counter!(DECRYPTIONS, "key_id" => Arc::clone(id), "format" => format)
                .increment(1);
        }
        None => metrics::counter!(DECRYPTIONS, "format" => format).increment(1),
    }
}

pub(crate) fn failed(kind: &'static str, key_id: Option<String>) {
    match key_id {
        Some(id) => {
            metrics::counter!(DECRYPT_FAILURES, "kind" => kind, "key_id" => id).increment(1);
        }
        None => metrics::counter!(DECRYPT_FAILURES, "kind" => kind).increment(1),
    }
}
