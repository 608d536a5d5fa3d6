//! [`KeyringBuilder`]: assembling and validating a [`Keyring`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::error::KeyError;
use crate::key::{AesKey, FernetKey};
use crate::metrics::KeyCounters;
use crate::provider::{self, Provider};

use super::{AesEntry, FernetEntry, Inner, KeyMetadata, Keyring};

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
    /// open Fernet tokens ([`DecryptError::FernetEnded`](crate::DecryptError::FernetEnded), without trying any
    /// key) and to write them ([`CryptoError::FernetEnded`](crate::CryptoError::FernetEnded)). Before it,
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
