//! Test support (feature `testing`): proptest strategies for keys,
//! keyrings, plaintexts and stored values, helpers, [`AuditLog`] to
//! capture audit events, and [`provider_conformance`], the suite every
//! crypto provider passes. Enable it from `[dev-dependencies]` only.
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

use crate::provider::{Provider, Unspecified};
use crate::{AesKey, DecryptError, FernetKey, Keyring};

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

/// Decodes hex test data (panics on bad input: for fixed test vectors).
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vectors are hex"))
        .collect()
}

/// Known answers for the primitives, computed independently with Python's
/// `cryptography` 48 (AESGCM, HMAC, Cipher(AES, CBC) with PKCS7 padding).
mod vectors {
    /// AES-256-GCM: key 00..1f, nonce 64..6f, AAD "header || aad",
    /// plaintext `(i * 7 + 3) % 256` for i in 0..67.
    pub(super) const GCM_67: &str = "4b11cf7e66cf7baa052016b88d3b0f9131b8878204fa6ed60c6315883c6d70947703b138b3149610e6d1510fca7c8f834801f98f4f3c3cac71633576482f1036cb460a602f8c68764ebf21b935692882a7a937";
    /// AES-256-GCM, same key and nonce, empty plaintext and AAD: the tag.
    pub(super) const GCM_EMPTY: &str = "609bd50f6ad76df665f048ba8c5fd706";
    /// HMAC-SHA256 under key 00..0f of `80 || 00..27`.
    pub(super) const HMAC: &str =
        "0bf0eccbb0c389107f18455ff24ceaa5c7ccc761dcca079e2d4cde72a88cd0e9";
    /// AES-128-CBC, key 10..1f, IV c8..d7, PKCS#7-padded 67-byte plaintext
    /// above.
    pub(super) const CBC_67: &str = "579b6d48f6a9bf57b48c594e1c33146f2646c8ad8107fad2b584d2c65ab9374c0bd71e8f2d49b94ccc763edbbde88a7866cafbedd5e9728728b18ff2dc9a95ddd5283d1c770067d72cdb4aebc6742e0e";
    /// One block ending in 0x00 (invalid padding), and one ending in
    /// `01 02` (invalid), encrypted without padding under the same key/IV.
    pub(super) const CBC_BAD_PADDING: [&str; 2] = [
        "2903f3e55692697a3b10bbaeaab20ac1",
        "dfd112ceb3c46f4cdf63fb64c075767e",
    ];
    /// docs/format.md vector 2: key 00..1f, nonce 01..0c, AAD
    /// "plaid_items.access_token", plaintext "access-sandbox-123".
    pub(super) const ENVELOPE_TEXT: &str =
        "mn1:db4daed658e3313c:AQIDBAUGBwgJCgsMZIk5sJ_n3fUtzAclf2vHGXBwBdlNmHGGsohVk_NjDXXsbQ";
    /// docs/format.md vector 1: empty plaintext and AAD, nonce 00..0b.
    pub(super) const ENVELOPE_EMPTY: &str =
        "mn1:db4daed658e3313c:AAECAwQFBgcICQoLAryBOaYyk8BYazDsgnkwsw";
}

/// The conformance suite of a crypto [`Provider`]: known answers for
/// AES-256-GCM (seal, open in place, open into another buffer), rejection
/// of every tampered input with the one opaque error, HMAC-SHA256 and
/// AES-128-CBC (Fernet's primitives) including bad padding, and the
/// envelope test vectors of docs/format.md through a keyring built on the
/// provider. Panics on the first failure, naming the check (never a key or
/// plaintext of a user: the data are fixed test vectors).
///
/// ```
/// manna_crypto::testing::provider_conformance(&manna_crypto::provider::RustCrypto);
/// ```
pub fn provider_conformance(provider: &'static dyn Provider) {
    let name = provider.name();
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let nonce: [u8; 12] = core::array::from_fn(|i| 100 + i as u8);
    let aad = b"header || aad";
    let plain: Vec<u8> = (0..67u32).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    let expected = unhex(vectors::GCM_67);
    let gcm = provider.aes256gcm(&key);

    // Seal: ciphertext and tag as the independent implementation's.
    let mut buf = plain.clone();
    let tag = gcm
        .seal_in_place(&nonce, aad, &mut buf)
        .expect("seal succeeds");
    assert_eq!(buf, expected[..67], "{name}: AES-256-GCM ciphertext");
    assert_eq!(tag[..], expected[67..], "{name}: AES-256-GCM tag");
    let mut empty: [u8; 0] = [];
    let tag = gcm
        .seal_in_place(&nonce, b"", &mut empty)
        .expect("seal succeeds");
    assert_eq!(tag[..], unhex(vectors::GCM_EMPTY), "{name}: empty tag");

    // Open, in place and into another buffer.
    let mut in_out = expected.clone();
    assert_eq!(
        gcm.open_in_place(&nonce, aad, &mut in_out),
        Ok(67),
        "{name}: open_in_place"
    );
    assert_eq!(in_out[..67], plain[..], "{name}: open_in_place plaintext");
    let mut out = vec![0u8; 67];
    assert_eq!(
        gcm.open_to(&nonce, aad, &expected, &mut out),
        Ok(()),
        "{name}: open_to"
    );
    assert_eq!(out, plain, "{name}: open_to plaintext");
    let mut tag_only = unhex(vectors::GCM_EMPTY);
    assert_eq!(
        gcm.open_in_place(&nonce, b"", &mut tag_only),
        Ok(0),
        "{name}: empty open"
    );

    // Every tampering is the same opaque failure.
    let other_nonce: [u8; 12] = core::array::from_fn(|i| 101 + i as u8);
    for bit in (0..expected.len() * 8).step_by(37) {
        let mut bad = expected.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let mut copy = bad.clone();
        assert_eq!(
            gcm.open_in_place(&nonce, aad, &mut copy),
            Err(Unspecified),
            "{name}: bit {bit}"
        );
        let mut out = vec![0u8; 67];
        assert_eq!(
            gcm.open_to(&nonce, aad, &bad, &mut out),
            Err(Unspecified),
            "{name}: bit {bit}"
        );
    }
    let mut copy = expected.clone();
    assert_eq!(
        gcm.open_in_place(&nonce, b"header || aaD", &mut copy),
        Err(Unspecified),
        "{name}: aad"
    );
    let mut copy = expected.clone();
    assert_eq!(
        gcm.open_in_place(&other_nonce, aad, &mut copy),
        Err(Unspecified),
        "{name}: nonce"
    );
    let other = provider.aes256gcm(&[1; 32]);
    let mut copy = expected.clone();
    assert_eq!(
        other.open_in_place(&nonce, aad, &mut copy),
        Err(Unspecified),
        "{name}: key"
    );
    assert_eq!(
        gcm.open_in_place(&nonce, aad, &mut [0u8; 15]),
        Err(Unspecified),
        "{name}: short"
    );
    assert_eq!(
        gcm.open_to(&nonce, aad, &expected, &mut [0u8; 66]),
        Err(Unspecified),
        "{name}: out len"
    );

    // Round trips across block boundaries.
    for len in (0..=70).chain([1023, 4099]) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut buf = data.clone();
        let tag = gcm
            .seal_in_place(&nonce, aad, &mut buf)
            .expect("seal succeeds");
        buf.extend_from_slice(&tag);
        let mut out = vec![0u8; len];
        assert_eq!(
            gcm.open_to(&nonce, aad, &buf, &mut out),
            Ok(()),
            "{name}: {len} bytes"
        );
        assert_eq!(
            gcm.open_in_place(&nonce, aad, &mut buf),
            Ok(len),
            "{name}: {len} bytes"
        );
        assert_eq!(buf[..len], data[..], "{name}: {len} bytes");
        assert_eq!(out, data, "{name}: {len} bytes");
    }

    // Fernet's primitives.
    let signing: [u8; 16] = core::array::from_fn(|i| i as u8);
    let encryption: [u8; 16] = core::array::from_fn(|i| 16 + i as u8);
    let fernet = provider.fernet(&signing, &encryption);
    let data: Vec<u8> = std::iter::once(0x80).chain(0..40).collect();
    let mac: [u8; 32] = unhex(vectors::HMAC).try_into().expect("32 bytes");
    assert_eq!(
        fernet.verify_hmac_sha256(&data, &mac),
        Ok(()),
        "{name}: HMAC-SHA256"
    );
    for i in [0, 17, 31] {
        let mut bad = mac;
        bad[i] ^= 0x40;
        assert_eq!(
            fernet.verify_hmac_sha256(&data, &bad),
            Err(Unspecified),
            "{name}: HMAC byte {i}"
        );
    }
    assert_eq!(
        fernet.verify_hmac_sha256(&data[1..], &mac),
        Err(Unspecified),
        "{name}: HMAC data"
    );
    let iv: [u8; 16] = core::array::from_fn(|i| 200 + i as u8);
    let mut cbc = unhex(vectors::CBC_67);
    assert_eq!(
        fernet.aes128_cbc_decrypt_in_place(&iv, &mut cbc),
        Ok(67),
        "{name}: AES-128-CBC"
    );
    assert_eq!(cbc[..67], plain[..], "{name}: AES-128-CBC plaintext");
    for bad in vectors::CBC_BAD_PADDING {
        let mut block = unhex(bad);
        assert_eq!(
            fernet.aes128_cbc_decrypt_in_place(&iv, &mut block),
            Err(Unspecified),
            "{name}: padding"
        );
    }
    for len in [0, 15, 17] {
        let mut odd = vec![0u8; len];
        assert_eq!(
            fernet.aes128_cbc_decrypt_in_place(&iv, &mut odd),
            Err(Unspecified),
            "{name}: {len}-byte CBC input"
        );
    }

    // The envelope on this provider: the test vectors of docs/format.md.
    let keyring = Keyring::builder()
        .provider(provider)
        .primary(AesKey::from_bytes(key))
        .build()
        .expect("a one-key keyring");
    assert_eq!(keyring.provider().name(), name);
    let nonce2: [u8; 12] = core::array::from_fn(|i| 1 + i as u8);
    let token = keyring
        .encrypt_with_nonce(b"access-sandbox-123", b"plaid_items.access_token", nonce2)
        .expect("encrypt");
    assert_eq!(
        token,
        vectors::ENVELOPE_TEXT,
        "{name}: docs/format.md vector 2"
    );
    let empty = keyring
        .encrypt_with_nonce(b"", b"", core::array::from_fn(|i| i as u8))
        .expect("encrypt");
    assert_eq!(
        empty,
        vectors::ENVELOPE_EMPTY,
        "{name}: docs/format.md vector 1"
    );
    let opened = keyring
        .decrypt(vectors::ENVELOPE_TEXT, b"plaid_items.access_token")
        .expect("vector 2 decrypts");
    assert_eq!(
        &*opened, b"access-sandbox-123",
        "{name}: vector 2 plaintext"
    );
    assert_eq!(
        keyring.decrypt(vectors::ENVELOPE_TEXT, b"users.email"),
        Err(DecryptError::Authentication),
        "{name}: wrong AAD"
    );
    let binary = keyring
        .encrypt_to_bytes_with_nonce(b"access-sandbox-123", b"plaid_items.access_token", nonce2)
        .expect("encrypt");
    let opened = keyring
        .decrypt_bytes(&binary, b"plaid_items.access_token")
        .expect("binary form decrypts");
    assert_eq!(&*opened, b"access-sandbox-123", "{name}: binary form");
}
