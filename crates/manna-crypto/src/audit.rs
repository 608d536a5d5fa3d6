//! Audit events: what happened to keys and encrypted data, for a security
//! log, as `tracing` events under one target, [`TARGET`] (`manna::audit`).
//!
//! Route them on their own with a `tracing-subscriber` filter, e.g. to a
//! JSON file a SIEM reads:
//!
//! ```text
//! tracing_subscriber::fmt().json()
//!     .with_writer(audit_file)
//!     .with_filter(tracing_subscriber::filter::Targets::new().with_target("manna::audit", Level::INFO))
//! ```
//!
//! Every event has an `event` field naming what happened
//! (`keyring_loaded`, `primary_changed`, `retire_check`, `migration_started`,
//! `migration_finished`, `decrypt_failed`, `lock_lost`) and carries ids,
//! counts and kinds — key ids, table and column names, row ids — never a key,
//! a plaintext or a stored value. Events that stored data can multiply
//! (decryption failures) are rate-limited by their emitters.

use crate::keyring::Keyring;
use crate::status::KeyRole;

/// The `tracing` target of every audit event.
pub const TARGET: &str = "manna::audit";

/// A keyring was loaded or installed: its key ids, roles and ages, and the
/// crypto provider it runs on.
/// `source` says from where (`environment`, `key file <path>`, ...).
pub fn keyring_loaded(keyring: &Keyring, source: &str) {
    let status = keyring.status();
    let describe = |role: KeyRole| {
        status
            .keys
            .iter()
            .filter(|k| k.role == role)
            .map(|k| match k.age_days {
                Some(days) => format!("{} ({days} d)", k.key_id),
                None => k.key_id.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    tracing::info!(
        target: TARGET,
        event = "keyring_loaded",
        source,
        primary = %describe(KeyRole::Primary),
        decrypt_only = %describe(KeyRole::DecryptOnly),
        fernet = %describe(KeyRole::Fernet),
        accept_plaintext = status.accept_plaintext,
        provider = keyring.provider().name(),
        "keyring loaded"
    );
}

/// A running process replaced its keyring; `old` and `new` primary key ids.
pub fn primary_changed(old: &Keyring, new: &Keyring) {
    tracing::info!(
        target: TARGET,
        event = "primary_changed",
        old = %old.primary_key_id(),
        new = %new.primary_key_id(),
        "primary key changed"
    );
}
