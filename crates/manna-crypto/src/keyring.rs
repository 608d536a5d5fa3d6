//! The keyring: one primary AES-256-GCM key, decrypt-only previous keys,
//! legacy Fernet keys, optional plaintext acceptance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::RngCore as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::envelope::{self, Format, Prefix, BODY_B64, HEADER_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{CryptoError, DecryptError, KeyError};
use crate::key::{AesKey, FernetKey, KeyId};
use crate::metrics::{self, KeyCounters};
use crate::plaintext::Plaintext;
use crate::provider::{self, Aes256GcmKey, FernetPrimitives, Provider};
use crate::status::{KeyRole, KeyStatus, Status};

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

/// Builds a [`Keyring`]; see [`Keyring::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct KeyringBuilder {
    primary: Option<(AesKey, KeyMetadata)>,
    previous: Vec<(AesKey, KeyMetadata)>,
    fernet: Vec<FernetKey>,
    fernet_until: Option<OffsetDateTime>,
    accept_plaintext: bool,
    provider: Option<&'static dyn Provider>,
}

impl KeyringBuilder {
    /// The crypto provider this keyring's keys run on (see
    /// [`provider`](crate::provider)); without it, the process default
    /// ([`provider::default_provider`]). Tokens are the same bytes whichever
    /// provider makes them.
    ///
    /// ```
    /// use manna_crypto::provider::RustCrypto;
    /// use manna_crypto::{AesKey, Keyring};
    /// let keyring = Keyring::builder()
    ///     .provider(&RustCrypto)
    ///     .primary(AesKey::generate())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(keyring.provider().name(), "rustcrypto");
    /// ```
    pub fn provider(mut self, provider: &'static dyn Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Sets the primary key (the one that encrypts).
    pub fn primary(self, key: AesKey) -> Self {
        self.primary_with_metadata(key, KeyMetadata::default())
    }

    /// Sets the primary key with its creation/expiry dates.
    pub fn primary_with_metadata(mut self, key: AesKey, metadata: KeyMetadata) -> Self {
        self.primary = Some((key, metadata));
        self
    }

    /// Adds a decrypt-only AES key (a previous primary).
    pub fn previous(self, key: AesKey) -> Self {
        self.previous_with_metadata(key, KeyMetadata::default())
    }

    /// Adds a decrypt-only AES key with its creation/expiry dates.
    pub fn previous_with_metadata(mut self, key: AesKey, metadata: KeyMetadata) -> Self {
        self.previous.push((key, metadata));
        self
    }

    /// Adds several decrypt-only AES keys.
    pub fn previous_keys(mut self, keys: impl IntoIterator<Item = AesKey>) -> Self {
        self.previous
            .extend(keys.into_iter().map(|k| (k, KeyMetadata::default())));
        self
    }

    /// Adds a legacy Fernet key; Fernet keys are tried in the order added
    /// (as Python's `MultiFernet`) and the first one encrypts for rollback.
    pub fn fernet(mut self, key: FernetKey) -> Self {
        self.fernet.push(key);
        self
    }

    /// Adds several Fernet keys, in order.
    pub fn fernet_keys(mut self, keys: impl IntoIterator<Item = FernetKey>) -> Self {
        self.fernet.extend(keys);
        self
    }

    /// Ends Fernet at `until`: from that instant on, the keyring refuses to
    /// open Fernet tokens ([`DecryptError::FernetEnded`], without trying any
    /// key) and to write them ([`CryptoError::FernetEnded`]). Before it,
    /// nothing changes. It bounds the Fernet downgrade (docs/format.md):
    /// Fernet tokens carry no AAD, so while they are read, one copied from
    /// another column, row or backup is accepted.
    ///
    /// [`Keyring::fernet_key_of`] still names the key a token is under, so
    /// a census stays truthful about the rows still in Fernet.
    ///
    /// ```
    /// use manna_crypto::{AesKey, DecryptError, FernetKey, Keyring};
    /// use time::macros::datetime;
    /// let fernet = FernetKey::generate();
    /// let token = fernet.encrypt(b"legacy");
    /// let keyring = Keyring::builder()
    ///     .primary(AesKey::generate())
    ///     .fernet(fernet)
    ///     .fernet_until(datetime!(2020-01-01 0:00 UTC))
    ///     .build()
    ///     .unwrap();
    /// let err = keyring.decrypt(&token, b"").unwrap_err();
    /// assert_eq!(err.kind(), "fernet_ended");
    /// assert!(err.to_string().contains("Fernet reading ended at 2020-01-01T00:00:00Z"));
    /// ```
    pub fn fernet_until(mut self, until: OffsetDateTime) -> Self {
        self.fernet_until = Some(until);
        self
    }

    /// Whether [`Keyring::decrypt`] returns values that look like
    /// unencrypted text as they are (default `false`; turn on only to
    /// migrate a never-encrypted column).
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    /// Checks the configuration and builds the keyring.
    ///
    /// Errors: no primary key; a key id present twice; the same material
    /// configured as an AES key and as a Fernet key.
    pub fn build(self) -> Result<Keyring, KeyError> {
        let (primary, primary_meta) = self.primary.ok_or(KeyError::NoPrimaryKey)?;
        let provider = self.provider.unwrap_or_else(provider::default_provider);
        let mut aes = Vec::with_capacity(1 + self.previous.len());
        for (key, meta) in std::iter::once((&primary, primary_meta))
            .chain(self.previous.iter().map(|(k, m)| (k, *m)))
        {
            if aes.iter().any(|e: &AesEntry| e.id == key.id()) {
                return Err(KeyError::DuplicateKeyId { key_id: key.id() });
            }
            if self.fernet.iter().any(|f| f.same_material_as(key)) {
                return Err(KeyError::AesKeyUsedAsFernetKey {
                    aes_key_id: key.id(),
                });
            }
            aes.push(AesEntry::new(key, meta, provider));
        }
        let mut fernet: Vec<FernetEntry> = Vec::with_capacity(self.fernet.len());
        for key in self.fernet {
            if fernet.iter().any(|e| e.key.same_material(&key)) {
                return Err(KeyError::DuplicateKeyId { key_id: key.id() });
            }
            fernet.push(FernetEntry {
                counters: KeyCounters::new(&key.id().to_string(), "fernet"),
                primitives: key.primitives(provider),
                key,
                encryptions: AtomicU64::new(0),
            });
        }
        Ok(Keyring {
            inner: Arc::new(Inner {
                aes,
                fernet,
                fernet_until: self.fernet_until,
                accept_plaintext: self.accept_plaintext,
                provider,
            }),
        })
    }
}

/// The `ciphertext ‖ tag` of a v1 envelope, as the decoder found it.
enum Sealed<'a> {
    /// Decoded from the text form into a buffer of ours: opened in place,
    /// and that buffer becomes the plaintext.
    Decoded(Zeroizing<Vec<u8>>),
    /// The caller's bytes (binary form): opened into a new buffer.
    Borrowed(&'a [u8]),
}

impl Sealed<'_> {
    fn len(&self) -> usize {
        match self {
            Sealed::Decoded(buf) => buf.len(),
            Sealed::Borrowed(input) => input.len(),
        }
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

    /// Encrypts under the primary key into a v1 text envelope
    /// (`mn1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`). `aad` is
    /// authenticated, not stored: the same bytes must be given to decrypt.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        self.encrypt_with_nonce_inner(plaintext, aad, nonce)
            .inspect_err(metrics::encrypt_failed)
    }

    /// Encrypts with a caller-chosen nonce, to reproduce the test vectors of
    /// docs/format.md. Reusing a nonce under a key destroys GCM's security:
    /// never use this outside tests.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn encrypt_with_nonce(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, CryptoError> {
        self.encrypt_with_nonce_inner(plaintext, aad, nonce)
    }

    fn encrypt_with_nonce_inner(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, CryptoError> {
        /// Plaintexts up to this size are sealed in a stack buffer.
        const STACK_PLAINTEXT: usize = 512;
        let entry = self.primary_entry();
        let body_len = NONCE_LEN + plaintext.len() + TAG_LEN;
        let mut out = String::with_capacity(HEADER_LEN + (body_len * 4).div_ceil(3));
        out.push_str(std::str::from_utf8(&entry.header).expect("the header is ASCII"));
        if plaintext.len() <= STACK_PLAINTEXT {
            let mut stack = [0u8; NONCE_LEN + STACK_PLAINTEXT + TAG_LEN];
            let body = &mut stack[..body_len];
            self.seal(&entry.header, plaintext, aad, nonce, body)?;
            BODY_B64.encode_append(&*body, &mut out);
        } else {
            let mut body = vec![0u8; body_len];
            self.seal(&entry.header, plaintext, aad, nonce, &mut body)?;
            BODY_B64.encode_append(&body, &mut out);
        }
        Ok(out)
    }

    /// Encrypts under the primary key into the v1 binary form (for `BYTEA`
    /// / `BLOB` columns): the 21-byte header ending in `.` instead of `:`,
    /// then the raw `nonce ‖ ciphertext ‖ tag`. Read it with
    /// [`Keyring::decrypt_bytes`].
    pub fn encrypt_to_bytes(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        self.encrypt_to_bytes_inner(plaintext, aad, nonce)
            .inspect_err(metrics::encrypt_failed)
    }

    /// [`Keyring::encrypt_to_bytes`] with a caller-chosen nonce, for test
    /// vectors only (see [`Keyring::encrypt_with_nonce`]).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn encrypt_to_bytes_with_nonce(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        self.encrypt_to_bytes_inner(plaintext, aad, nonce)
    }

    fn encrypt_to_bytes_inner(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        let entry = self.primary_entry();
        let mut out = vec![0u8; HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN];
        out[..HEADER_LEN].copy_from_slice(&entry.header_binary);
        self.seal(
            &entry.header_binary,
            plaintext,
            aad,
            nonce,
            &mut out[HEADER_LEN..],
        )?;
        Ok(out)
    }

    /// Encrypts with the primary key into `out` (exactly
    /// `nonce ‖ ciphertext ‖ tag` long), authenticating `header ‖ aad`.
    fn seal(
        &self,
        header: &[u8; HEADER_LEN],
        plaintext: &[u8],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.check_primary_not_expired()?;
        let entry = self.primary_entry();
        let too_large = || CryptoError::PlaintextTooLarge {
            len: plaintext.len(),
        };
        if plaintext.len() as u64 > MAX_PLAINTEXT {
            return Err(too_large());
        }
        if entry.encryptions.fetch_add(1, Ordering::Relaxed) >= NONCE_LIMIT {
            entry.encryptions.fetch_sub(1, Ordering::Relaxed);
            return Err(CryptoError::NonceLimitReached { key_id: entry.id });
        }
        let (nonce_out, rest) = out.split_at_mut(NONCE_LEN);
        let (ct, tag_out) = rest.split_at_mut(plaintext.len());
        nonce_out.copy_from_slice(&nonce);
        ct.copy_from_slice(plaintext);
        let tag = with_full_aad(header, aad, |full_aad| {
            entry.cipher.seal_in_place(&nonce, full_aad, ct)
        })
        .map_err(|_| too_large())?;
        tag_out.copy_from_slice(&tag);
        entry.counters.encrypted();
        Ok(())
    }

    /// Decrypts a stored value:
    ///
    /// - an `mn1:` envelope with the AES key its header names (no trial
    ///   decryption across AES keys), authenticating `header ‖ aad`;
    /// - a Fernet token with each Fernet key in order (`aad` does not apply:
    ///   Fernet has none), until [`KeyringBuilder::fernet_until`];
    /// - text that looks like plaintext, returned as is, only when the
    ///   keyring accepts plaintext.
    pub fn decrypt(&self, token: &str, aad: &[u8]) -> Result<Plaintext, DecryptError> {
        self.decrypt_with(token, aad, true)
    }

    /// [`Keyring::decrypt`] for a value that must never be a Fernet token (a
    /// column that opted out of Fernet): a Fernet token fails with the
    /// opaque [`DecryptError::Authentication`], without trying any Fernet
    /// key, even while the keyring has some. Fernet tokens carry no AAD, so
    /// this is how a column refuses tokens copied from elsewhere.
    ///
    /// ```
    /// use manna_crypto::{AesKey, DecryptError, FernetKey, Keyring};
    /// let fernet = FernetKey::generate();
    /// let keyring = Keyring::builder()
    ///     .primary(AesKey::generate())
    ///     .fernet(fernet.clone())
    ///     .build()
    ///     .unwrap();
    /// let legacy = fernet.encrypt(b"copied from elsewhere");
    /// assert!(keyring.decrypt(&legacy, b"users.ssn").is_ok());
    /// assert_eq!(
    ///     keyring.decrypt_without_fernet(&legacy, b"users.ssn").unwrap_err(),
    ///     DecryptError::Authentication
    /// );
    /// let token = keyring.encrypt(b"native", b"users.ssn").unwrap();
    /// assert!(keyring.decrypt_without_fernet(&token, b"users.ssn").is_ok());
    /// ```
    pub fn decrypt_without_fernet(
        &self,
        token: &str,
        aad: &[u8],
    ) -> Result<Plaintext, DecryptError> {
        self.decrypt_with(token, aad, false)
    }

    fn decrypt_with(
        &self,
        token: &str,
        aad: &[u8],
        fernet: bool,
    ) -> Result<Plaintext, DecryptError> {
        let result = self.decrypt_inner(token, aad, fernet);
        if let Err(e) = &result {
            // Labels only for configured keys: a key id read from stored
            // data could otherwise create any number of series.
            let key_id = match e {
                DecryptError::UnknownKey { .. } => Some(metrics::UNKNOWN_KEY_LABEL.to_owned()),
                DecryptError::Authentication => inspect_key_id(token).map(|id| {
                    if self.is_configured_aes_key(&id) {
                        id
                    } else {
                        metrics::UNKNOWN_KEY_LABEL.to_owned()
                    }
                }),
                _ => None,
            };
            metrics::failed(e.kind(), key_id);
        }
        result
    }

    fn decrypt_inner(
        &self,
        token: &str,
        aad: &[u8],
        fernet: bool,
    ) -> Result<Plaintext, DecryptError> {
        match envelope::parse_prefix(token.as_bytes()) {
            Prefix::V1 {
                header,
                key_id,
                body,
                binary: false,
            } => {
                // 16 base64 characters are exactly the 12 nonce bytes, so
                // the nonce and `ciphertext ‖ tag` decode separately and
                // the plaintext ends up at the start of its buffer.
                const NONCE_CHARS: usize = NONCE_LEN / 3 * 4;
                if body.len() < NONCE_CHARS {
                    return Err(DecryptError::UnknownFormat);
                }
                let (nonce_b64, rest_b64) = body.split_at(NONCE_CHARS);
                let mut nonce = [0u8; NONCE_LEN];
                BODY_B64
                    .decode(nonce_b64, base64_simd::Out::from_slice(&mut nonce))
                    .map_err(|_| DecryptError::UnknownFormat)?;
                // Decoded straight into the buffer that is decrypted in
                // place and returned: no other copy of the plaintext.
                let ct_tag = BODY_B64
                    .decode_to_vec(rest_b64)
                    .map_err(|_| DecryptError::UnknownFormat)?;
                self.open_v1(
                    header,
                    key_id,
                    nonce,
                    Sealed::Decoded(Zeroizing::new(ct_tag)),
                    aad,
                )
            }
            Prefix::V1 { binary: true, .. } | Prefix::BrokenV1 => Err(DecryptError::UnknownFormat),
            Prefix::OtherVersion(version) => Err(DecryptError::UnsupportedVersion {
                version: version.to_owned(),
            }),
            Prefix::None => self.decrypt_non_envelope(token, fernet),
        }
    }

    /// Decrypts a value stored as bytes: the binary envelope of
    /// [`Keyring::encrypt_to_bytes`], or UTF-8 text (text envelope, Fernet
    /// token, plaintext) handled as by [`Keyring::decrypt`].
    pub fn decrypt_bytes(&self, value: &[u8], aad: &[u8]) -> Result<Plaintext, DecryptError> {
        self.decrypt_bytes_with(value, aad, true)
    }

    /// [`Keyring::decrypt_bytes`] refusing Fernet tokens, as
    /// [`Keyring::decrypt_without_fernet`] does.
    pub fn decrypt_bytes_without_fernet(
        &self,
        value: &[u8],
        aad: &[u8],
    ) -> Result<Plaintext, DecryptError> {
        self.decrypt_bytes_with(value, aad, false)
    }

    fn decrypt_bytes_with(
        &self,
        value: &[u8],
        aad: &[u8],
        fernet: bool,
    ) -> Result<Plaintext, DecryptError> {
        let result = match envelope::parse_prefix(value) {
            Prefix::V1 {
                header,
                key_id,
                body,
                binary: true,
            } => match body.split_first_chunk::<NONCE_LEN>() {
                Some((nonce, ct_tag)) => {
                    self.open_v1(header, key_id, *nonce, Sealed::Borrowed(ct_tag), aad)
                }
                None => Err(DecryptError::UnknownFormat),
            },
            _ => match std::str::from_utf8(value) {
                Ok(text) => return self.decrypt_with(text, aad, fernet),
                Err(_) => Err(DecryptError::UnknownFormat),
            },
        };
        if let Err(e) = &result {
            metrics::failed(e.kind(), None);
        }
        result
    }

    fn decrypt_non_envelope(&self, token: &str, fernet: bool) -> Result<Plaintext, DecryptError> {
        match envelope::inspect(token) {
            Format::Fernet if fernet => self.decrypt_fernet_checked(token, None),
            // Refused as any unauthentic value is: no Fernet key is tried.
            Format::Fernet => Err(DecryptError::Authentication),
            Format::Plaintext if self.inner.accept_plaintext => {
                metrics::plaintext_passed();
                Ok(Plaintext::new(Zeroizing::new(token.as_bytes().to_vec())))
            }
            Format::Plaintext => Err(DecryptError::PlaintextNotAccepted),
            _ => Err(DecryptError::UnknownFormat),
        }
    }

    /// Opens a v1 body given its nonce and `ciphertext ‖ tag`.
    fn open_v1(
        &self,
        header: &[u8],
        key_id: KeyId,
        nonce: [u8; NONCE_LEN],
        sealed: Sealed<'_>,
        aad: &[u8],
    ) -> Result<Plaintext, DecryptError> {
        let Some(ct_len) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(DecryptError::UnknownFormat);
        };
        let entry = self.entry(key_id).ok_or_else(|| DecryptError::UnknownKey {
            key_id,
            configured: self.inner.aes.iter().map(|e| e.id).collect(),
        })?;
        let plain = with_full_aad(header, aad, |full_aad| match sealed {
            Sealed::Decoded(mut buf) => {
                entry.cipher.open_in_place(&nonce, full_aad, &mut buf)?;
                buf.truncate(ct_len);
                Ok(buf)
            }
            Sealed::Borrowed(input) => {
                let mut out = Zeroizing::new(vec![0u8; ct_len]);
                entry.cipher.open_to(&nonce, full_aad, input, &mut out)?;
                Ok(out)
            }
        })
        // Whatever the provider says, one opaque error.
        .map_err(|_: provider::Unspecified| DecryptError::Authentication)?;
        entry.counters.decrypted();
        Ok(Plaintext::new(plain))
    }

    /// Decrypts a Fernet token, trying the keys in order. `window` is an
    /// optional `(ttl, now)` check done after authentication.
    fn decrypt_fernet_checked(
        &self,
        token: &str,
        window: Option<(Option<std::time::Duration>, OffsetDateTime)>,
    ) -> Result<Plaintext, DecryptError> {
        if self.inner.fernet.is_empty() {
            return Err(DecryptError::NoFernetKey);
        }
        self.check_fernet_not_ended()?;
        for entry in &self.inner.fernet {
            if let Some(plain) = crate::fernet::decrypt(&*entry.primitives, token, window)? {
                entry.counters.decrypted();
                return Ok(plain);
            }
        }
        Err(DecryptError::Authentication)
    }

    /// Decrypts a Fernet token checking its age against a supplied clock, as
    /// Python's `Fernet.decrypt(token, ttl)` does: the token must be
    /// authentic under one of the Fernet keys, no older than `ttl` (if
    /// given) and at most 60 s in the future. Authentication is checked
    /// first, so [`DecryptError::FernetTimestamp`] is only returned for
    /// authentic tokens.
    pub fn decrypt_fernet_at(
        &self,
        token: &str,
        ttl: Option<std::time::Duration>,
        now: OffsetDateTime,
    ) -> Result<Plaintext, DecryptError> {
        let result = self.decrypt_fernet_checked(token, Some((ttl, now)));
        if let Err(e) = &result {
            metrics::failed(e.kind(), None);
        }
        result
    }

    /// Encrypts to a Fernet token with the first Fernet key: the rollback
    /// target. Fails if no Fernet key is configured, or once
    /// [`KeyringBuilder::fernet_until`] has passed.
    pub fn encrypt_fernet(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        self.seal_fernet(plaintext)
            .inspect_err(metrics::encrypt_failed)
    }

    fn seal_fernet(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let entry = self.inner.fernet.first().ok_or(CryptoError::NoFernetKey)?;
        if let Some(until) = self.fernet_ended_at(OffsetDateTime::now_utc()) {
            return Err(CryptoError::FernetEnded {
                until: rfc3339(until),
            });
        }
        entry.encryptions.fetch_add(1, Ordering::Relaxed);
        let token = entry.key.fernet.encrypt(plaintext);
        entry.counters.encrypted();
        Ok(token)
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

impl Keyring {
    /// Whether `id` (hex) is the primary or a decrypt-only AES key's id.
    fn is_configured_aes_key(&self, id: &str) -> bool {
        self.primary_key_id().to_string() == id
            || self
                .decrypt_only_key_ids()
                .iter()
                .any(|k| k.to_string() == id)
    }
}

/// An instant as RFC 3339 text (for messages).
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn inspect_key_id(token: &str) -> Option<String> {
    match envelope::parse_prefix(token.as_bytes()) {
        Prefix::V1 { key_id, .. } => Some(key_id.to_string()),
        _ => None,
    }
}
