//! Test support (feature `testing`): proptest strategies for keys,
//! keyrings, plaintexts and stored values, helpers, and [`AuditLog`] to
//! capture audit events. Enable it from `[dev-dependencies]` only.
//!
//! ```
//! use manna_crypto::testing::{keyring, plaintext};
//! use proptest::prelude::*;
//!
//! proptest!(|(keyring in keyring(), value in plaintext())| {
//!     let token = keyring.encrypt(&value, b"t.c").expect("encrypt");
//!     prop_assert_eq!(&*keyring.decrypt(&token, b"t.c").expect("decrypt"), &value[..]);
//! });
//! ```

use proptest::collection::vec;
use proptest::prelude::*;

use crate::{AesKey, FernetKey, Keyring};

/// Any AES-256 key.
pub fn aes_key() -> impl Strategy<Value = AesKey> {
    any::<[u8; 32]>().prop_map(AesKey::from_bytes)
}

/// Any Fernet key.
pub fn fernet_key() -> impl Strategy<Value = FernetKey> {
    any::<[u8; 32]>().prop_map(FernetKey::from_bytes)
}

/// Keyrings: a primary key, 0–3 decrypt-only keys, 0–2 Fernet keys,
/// plaintext not accepted.
pub fn keyring() -> impl Strategy<Value = Keyring> {
    keyring_accepting_plaintext(false)
}

/// Keyrings as [`keyring`], with the given plaintext acceptance.
pub fn keyring_accepting_plaintext(accept: bool) -> impl Strategy<Value = Keyring> {
    (aes_key(), vec(aes_key(), 0..=3), vec(fernet_key(), 0..=2)).prop_filter_map(
        "distinct keys",
        move |(primary, previous, fernet)| {
            Keyring::builder()
                .primary(primary)
                .previous_keys(previous)
                .fernet_keys(fernet)
                .accept_plaintext(accept)
                .build()
                .ok()
        },
    )
}

/// Keyrings that have at least one Fernet key.
pub fn keyring_with_fernet() -> impl Strategy<Value = Keyring> {
    (aes_key(), vec(aes_key(), 0..=2), vec(fernet_key(), 1..=2)).prop_filter_map(
        "distinct keys",
        |(primary, previous, fernet)| {
            Keyring::builder()
                .primary(primary)
                .previous_keys(previous)
                .fernet_keys(fernet)
                .build()
                .ok()
        },
    )
}

/// Plaintexts: empty, short, and up to 4 KiB of arbitrary bytes.
pub fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => vec(any::<u8>(), 1..64),
        2 => vec(any::<u8>(), 64..4096),
    ]
}

/// Text plaintexts (what TEXT columns hold).
pub fn text_plaintext() -> impl Strategy<Value = String> {
    "\\PC{0,200}"
}

/// AADs: empty or a `table.column[:id]`-like string, or arbitrary bytes.
pub fn aad() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        "[a-z_]{1,16}\\.[a-z_]{1,16}(:[0-9]{1,6})?".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..64),
    ]
}

/// A stored value with what decrypting it should give.
#[derive(Debug, Clone)]
pub struct StoredValue {
    /// The column's content.
    pub value: String,
    /// The AAD it was sealed with (AES envelopes only).
    pub aad: Vec<u8>,
    /// The plaintext it holds.
    pub plaintext: Vec<u8>,
    /// `"aes256gcm"` or `"fernet"`.
    pub format: &'static str,
}

/// Tokens made with `keyring`: envelopes under its primary key (with an
/// arbitrary AAD) and, if it has Fernet keys, Fernet tokens under its
/// first Fernet key.
pub fn token_for(keyring: Keyring) -> impl Strategy<Value = StoredValue> {
    (plaintext(), aad(), any::<bool>()).prop_map(move |(plaintext, aad, fernet)| {
        if fernet && keyring.has_fernet() {
            let value = keyring
                .encrypt_fernet(&plaintext)
                .expect("the keyring has a Fernet key");
            StoredValue {
                value,
                aad: Vec::new(),
                plaintext,
                format: "fernet",
            }
        } else {
            let value = keyring
                .encrypt(&plaintext, &aad)
                .expect("test plaintexts are small");
            StoredValue {
                value,
                aad,
                plaintext,
                format: "aes256gcm",
            }
        }
    })
}

/// Strings near the formats (truncated or mangled envelopes and Fernet
/// tokens, random base64, control characters, arbitrary Unicode): inputs for
/// "never panics" and "rejected" properties.
pub fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC*",
        ".*",
        "mn[0-9]:[0-9a-f]{0,20}:?[A-Za-z0-9_-]{0,80}",
        "mn1:[0-9a-f]{16}[:.][A-Za-z0-9_=+/-]{0,80}",
        "gAAAAA[A-Za-z0-9_=-]{0,200}",
        "[A-Za-z0-9_-]{90,140}={0,2}",
    ]
}

/// A keyring from a fixed seed (the same seed gives the same key ids), with
/// one Fernet key: handy for fixtures.
pub fn fixed_keyring(seed: u8) -> Keyring {
    Keyring::builder()
        .primary(AesKey::from_bytes([seed; 32]))
        .fernet(FernetKey::from_bytes([seed ^ 0xff; 32]))
        .build()
        .expect("a primary and a distinct Fernet key form a valid keyring")
}

/// `value` with bit `bit` (counted from the first byte's least significant
/// bit) flipped, as bytes (the result may not be UTF-8).
pub fn flip_bit(value: &[u8], bit: usize) -> Vec<u8> {
    let mut out = value.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Captures the audit events ([`crate::audit::TARGET`]) emitted on this
/// thread — and on threads that log through its subscriber, as the
/// migrator's workers do — while it lives.
///
/// ```
/// use manna_crypto::testing::AuditLog;
/// use manna_crypto::{audit, AesKey, Keyring};
/// let log = AuditLog::capture();
/// audit::keyring_loaded(&Keyring::new(AesKey::generate()), "a test");
/// assert!(log.text().contains("keyring_loaded"));
/// ```
pub struct AuditLog {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl AuditLog {
    /// Starts capturing (this thread's default subscriber until dropped).
    pub fn capture() -> Self {
        use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target(crate::audit::TARGET, tracing::Level::TRACE);
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
        AuditLog {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything captured so far, one event a line.
    pub fn text(&self) -> String {
        let buf = self
            .buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
