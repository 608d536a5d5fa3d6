//! The keyring: one primary AES-256-GCM key, decrypt-only previous keys,
//! legacy Fernet keys, optional plaintext acceptance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::envelope::{self, Format, Prefix, HEADER_LEN};
use crate::error::{CryptoError, DecryptError};
use crate::key::{AesKey, FernetKey, KeyId};
use crate::metrics::KeyCounters;
use crate::provider::{Aes256GcmKey, FernetPrimitives, Provider};
use crate::status::{KeyRole, KeyStatus, Status};

mod builder;
mod decrypt;
mod encrypt;

pub use builder::KeyringBuilder;

/// NIST SP 800-38D §8.3: at most 2^32 invocations of GCM with random 96-bit
/// nonces per key. Encryption under a key that reached it is refused.
pub const NONCE_LIMIT: u64 = 1 << 32;

/// Encryption count at which [`Status`] warns that the key should be rotated
/// (half the limit, 2^31), leaving room for other processes using the same
/// key: counts are kept per process.
pub const NONCE_WARNING_THRESHOLD: u64 = 1 << 31;

/// Largest plaintext AES-GCM accepts (2^36 - 32 bytes).
const MAX_PLAINTEXT: u64 = (1 << 36) - 32;

/// What is known about a key besides its material (from a key file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyMetadata {
    /// When the key was created.
    pub created_at: Option<OffsetDateTime>,
    /// When the key must no longer be used.
    pub expires_at: Option<OffsetDateTime>,
}

struct AesEntry {
    id: KeyId,
    counters: KeyCounters,
    header: [u8; HEADER_LEN],
    header_binary: [u8; HEADER_LEN],
    cipher: Box<dyn Aes256GcmKey>,
    encryptions: AtomicU64,
    metadata: KeyMetadata,
}

impl AesEntry {
    fn new(key: &AesKey, metadata: KeyMetadata, provider: &dyn Provider) -> Self {
        let id = key.id();
        let header = envelope::header_v1(id);
        let mut header_binary = header;
        header_binary[HEADER_LEN - 1] = envelope::BINARY_TERMINATOR;
        AesEntry {
            id,
            counters: KeyCounters::new(&id.to_string(), "aes256gcm"),
            header,
            header_binary,
            cipher: provider.aes256gcm(key.material()),
            encryptions: AtomicU64::new(0),
            metadata,
        }
    }
}

struct FernetEntry {
    key: FernetKey,
    /// The key's primitives on the keyring's provider, prepared once.
    primitives: Box<dyn FernetPrimitives>,
    counters: KeyCounters,
    encryptions: AtomicU64,
}

struct Inner {
    /// Index 0 is the primary key; the rest are decrypt-only.
    aes: Vec<AesEntry>,
    fernet: Vec<FernetEntry>,
    /// From this instant on, Fernet tokens are refused (and not written).
    fernet_until: Option<OffsetDateTime>,
    accept_plaintext: bool,
    provider: &'static dyn Provider,
}

/// One primary AES-256-GCM key that encrypts, decrypt-only previous keys,
/// legacy Fernet keys tried in order, and optional acceptance of plaintext.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`; clones share
/// encryption counters.
///
/// ```
/// use manna_crypto::{AesKey, Keyring};
/// let keyring = Keyring::new(AesKey::generate());
/// let token = keyring.encrypt(b"secret", b"users.ssn").expect("encrypt");
/// assert!(token.starts_with("mn1:"));
/// let plain = keyring.decrypt(&token, b"users.ssn").expect("decrypt");
/// assert_eq!(&*plain, b"secret");
/// ```
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary_key_id())
            .field("decrypt_only", &self.decrypt_only_key_ids())
            .field("fernet", &self.fernet_key_ids())
            .field("fernet_until", &self.inner.fernet_until)
            .field("accept_plaintext", &self.inner.accept_plaintext)
            .field("provider", &self.inner.provider.name())
            .finish()
    }
}

/// Runs `f` with `header || aad` without allocating for short AADs.
fn with_full_aad<R>(header: &[u8], aad: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const STACK: usize = 128;
    let len = header.len() + aad.len();
    if len <= STACK {
        let mut buf = [0u8; STACK];
        buf[..header.len()].copy_from_slice(header);
        buf[header.len()..len].copy_from_slice(aad);
        f(&buf[..len])
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(header);
        buf.extend_from_slice(aad);
        f(&buf)
    }
}

impl Keyring {
    /// A keyring with only a primary key: no previous keys, no Fernet, no
    /// plaintext.
    pub fn new(primary: AesKey) -> Self {
        Keyring::builder()
            .primary(primary)
            .build()
            .expect("a keyring with a single AES key is always valid")
    }

    /// Starts building a keyring.
    ///
    /// ```
    /// use manna_crypto::{AesKey, FernetKey, Keyring};
    /// let keyring = Keyring::builder()
    ///     .primary(AesKey::generate())
    ///     .previous(AesKey::generate())
    ///     .fernet(FernetKey::generate())
    ///     .build()
    ///     .expect("valid keyring");
    /// assert_eq!(keyring.status().decrypt_only_key_ids.len(), 1);
    /// ```
    pub fn builder() -> KeyringBuilder {
        KeyringBuilder::default()
    }

    /// Tells a value's format without decrypting (same as the free
    /// [`inspect`](crate::inspect)).
    pub fn inspect(&self, token: &str) -> Format {
        envelope::inspect(token)
    }

    /// Whether a value is not yet an envelope under the primary key (a
    /// previous key's envelope, a Fernet token, plaintext, or anything
    /// unreadable).
    pub fn needs_reencryption(&self, token: &str) -> bool {
        match envelope::parse_prefix(token.as_bytes()) {
            Prefix::V1 { key_id, .. } => key_id != self.primary_key_id(),
            _ => true,
        }
    }

    /// Adds `count` encryptions made under `key_id` elsewhere (other
    /// processes, earlier runs) to this keyring's counter, so that
    /// [`Keyring::status`] warnings and the 2^32 refusal account for them.
    /// Returns `false` if the keyring has no AES key with that id.
    pub fn record_external_encryptions(&self, key_id: KeyId, count: u64) -> bool {
        match self.entry(key_id) {
            Some(entry) => {
                let _ = entry
                    .encryptions
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_add(count))
                    });
                true
            }
            None => false,
        }
    }

    /// The crypto provider the keyring's keys run on.
    pub fn provider(&self) -> &'static dyn Provider {
        self.inner.provider
    }

    /// Id of the primary (encrypting) key.
    pub fn primary_key_id(&self) -> KeyId {
        self.primary_entry().id
    }

    /// Ids of the decrypt-only AES keys, in configuration order.
    pub fn decrypt_only_key_ids(&self) -> Vec<KeyId> {
        self.inner.aes[1..].iter().map(|e| e.id).collect()
    }

    /// Fingerprint ids of the Fernet keys, in order.
    pub fn fernet_key_ids(&self) -> Vec<KeyId> {
        self.inner.fernet.iter().map(|e| e.key.id()).collect()
    }

    /// Whether a key with this id is in the keyring (AES or Fernet).
    pub fn contains(&self, key_id: KeyId) -> bool {
        self.entry(key_id).is_some() || self.inner.fernet.iter().any(|e| e.key.id() == key_id)
    }

    /// The id of the Fernet key a Fernet token is under: the first configured
    /// Fernet key (in configured order, as MultiFernet tries them) under which
    /// the token is authentic. `None` when no configured key opens it (or it
    /// is not a Fernet token). Nothing is returned but the id: the plaintext
    /// is dropped (and zeroized) at once. It answers after `fernet_until`
    /// too: the token is still under that key, which a census and
    /// `keys retire-check` must tell.
    ///
    /// ```
    /// use manna_crypto::{AesKey, FernetKey, Keyring};
    /// let (old, new) = (FernetKey::generate(), FernetKey::generate());
    /// let keyring = Keyring::builder()
    ///     .primary(AesKey::generate())
    ///     .fernet_keys([new.clone(), old.clone()])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(keyring.fernet_key_of(&old.encrypt(b"x")), Some(old.id()));
    /// assert_eq!(keyring.fernet_key_of(&FernetKey::generate().encrypt(b"x")), None);
    /// ```
    pub fn fernet_key_of(&self, token: &str) -> Option<KeyId> {
        self.inner.fernet.iter().find_map(|entry| {
            crate::fernet::decrypt(&*entry.primitives, token, None)
                .ok()
                .flatten()
                .map(|_| entry.key.id())
        })
    }

    /// Whether Fernet keys are configured (at least one). Fernet tokens are
    /// read only while [`Keyring::check_fernet_not_ended`] is `Ok` too.
    pub fn has_fernet(&self) -> bool {
        !self.inner.fernet.is_empty()
    }

    /// The instant Fernet ends ([`KeyringBuilder::fernet_until`]), if set.
    pub fn fernet_until(&self) -> Option<OffsetDateTime> {
        self.inner.fernet_until
    }

    /// `Err(`[`DecryptError::FernetEnded`]`)` once `fernet_until` has
    /// passed: Fernet tokens are then refused, whoever reads them. Callers
    /// that classify many Fernet tokens without decrypting them (a
    /// migration's census) check it to count them as unreadable.
    pub fn check_fernet_not_ended(&self) -> Result<(), DecryptError> {
        match self.fernet_ended_at(OffsetDateTime::now_utc()) {
            Some(until) => Err(DecryptError::FernetEnded {
                until: rfc3339(until),
            }),
            None => Ok(()),
        }
    }

    /// `fernet_until`, if it is at or before `now`.
    fn fernet_ended_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.inner.fernet_until.filter(|until| now >= *until)
    }

    /// Whether plaintext values are accepted by [`Keyring::decrypt`].
    pub fn accepts_plaintext(&self) -> bool {
        self.inner.accept_plaintext
    }

    /// The encryption status now; see [`Keyring::status_at`].
    pub fn status(&self) -> Status {
        self.status_at(OffsetDateTime::now_utc())
    }

    /// The encryption status with key ages computed at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> Status {
        let mut keys = Vec::new();
        for (i, e) in self.inner.aes.iter().enumerate() {
            let role = if i == 0 {
                KeyRole::Primary
            } else {
                KeyRole::DecryptOnly
            };
            keys.push(KeyStatus::new(
                e.id,
                role,
                e.encryptions.load(Ordering::Relaxed),
                e.metadata,
                now,
            ));
        }
        for e in &self.inner.fernet {
            keys.push(KeyStatus::new(
                e.key.id(),
                KeyRole::Fernet,
                e.encryptions.load(Ordering::Relaxed),
                KeyMetadata::default(),
                now,
            ));
        }
        Status::from_keys(
            self.primary_key_id(),
            self.decrypt_only_key_ids(),
            self.fernet_key_ids(),
            self.inner.fernet_until,
            self.inner.accept_plaintext,
            keys,
            now,
        )
    }

    /// `Err(`[`CryptoError::PrimaryKeyExpired`]`)` when the primary key has
    /// a stated expiry (`expires_at`) that has passed: such a keyring still
    /// decrypts, but refuses to encrypt. Callers about to encrypt many
    /// values (a migration) check it once up front.
    pub fn check_primary_not_expired(&self) -> Result<(), CryptoError> {
        let entry = self.primary_entry();
        match entry.metadata.expires_at {
            Some(expires_at) if OffsetDateTime::now_utc() >= expires_at => {
                Err(CryptoError::PrimaryKeyExpired {
                    key_id: entry.id,
                    expires_at: rfc3339(expires_at),
                })
            }
            _ => Ok(()),
        }
    }

    fn primary_entry(&self) -> &AesEntry {
        &self.inner.aes[0]
    }

    fn entry(&self, key_id: KeyId) -> Option<&AesEntry> {
        self.inner.aes.iter().find(|e| e.id == key_id)
    }
}

/// An instant as RFC 3339 text (for messages).
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
