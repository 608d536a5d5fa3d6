//! Decryption: v1 envelopes (by the key their header names), Fernet tokens,
//! and plaintext when the keyring accepts it.

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::envelope::{self, Format, Prefix, BODY_B64, NONCE_LEN, TAG_LEN};
use crate::error::DecryptError;
use crate::key::KeyId;
use crate::metrics;
use crate::plaintext::Plaintext;
use crate::provider;

use super::{with_full_aad, Keyring};

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

impl Keyring {
    /// Decrypts a stored value:
    ///
    /// - an `mn1:` envelope with the AES key its header names (no trial
    ///   decryption across AES keys), authenticating `header ‖ aad`;
    /// - a Fernet token with each Fernet key in order (`aad` does not apply:
    ///   Fernet has none), until [`KeyringBuilder::fernet_until`](crate::KeyringBuilder::fernet_until);
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

fn inspect_key_id(token: &str) -> Option<String> {
    match envelope::parse_prefix(token.as_bytes()) {
        Prefix::V1 { key_id, .. } => Some(key_id.to_string()),
        _ => None,
    }
}
