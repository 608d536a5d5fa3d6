//! Encryption: v1 envelopes under the primary key (text and binary forms),
//! and Fernet tokens for rollbacks.

use std::sync::atomic::Ordering;

use rand::RngCore as _;
use time::OffsetDateTime;

use crate::envelope::{BODY_B64, HEADER_LEN, NONCE_LEN, TAG_LEN};
use crate::error::CryptoError;
use crate::metrics;

use super::{rfc3339, with_full_aad, Keyring, MAX_PLAINTEXT, NONCE_LIMIT};

impl Keyring {
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

    /// Encrypts to a Fernet token with the first Fernet key: the rollback
    /// target. Fails if no Fernet key is configured, or once
    /// [`KeyringBuilder::fernet_until`](crate::KeyringBuilder::fernet_until) has passed.
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
}
