//! Legacy Fernet: tokens are parsed and checked here and the primitives
//! (HMAC-SHA256, AES-128-CBC) run on the keyring's crypto provider; the
//! token-age checks are done here against a supplied clock. Encryption (for
//! rollback) goes through the `fernet` crate (pure-Rust backend).

use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::DecryptError;
use crate::key::FernetKey;
use crate::plaintext::Plaintext;
use crate::provider::{self, FernetPrimitives, AES_BLOCK_LEN, HMAC_SHA256_LEN};

/// Largest accepted clock skew for a token from the future, as in the
/// Fernet specification and Python's `cryptography`.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The Fernet version byte.
const VERSION: u8 = 0x80;
/// Version byte and big-endian timestamp, before the IV.
const IV_AT: usize = 1 + 8;
/// Where the ciphertext starts.
const CIPHERTEXT_AT: usize = IV_AT + AES_BLOCK_LEN;

/// Decrypts with one key's primitives. `Ok(None)`: not authentic under this
/// key (or not a Fernet token at all). `Err(FernetTimestamp)`: authentic but
/// outside the `(ttl, now)` window. Without a window, timestamps are not
/// checked, as Python's `Fernet.decrypt` without a TTL does not: tokens
/// written by a host whose clock ran ahead stay readable.
pub(crate) fn decrypt(
    key: &dyn FernetPrimitives,
    token: &str,
    window: Option<(Option<Duration>, OffsetDateTime)>,
) -> Result<Option<Plaintext>, DecryptError> {
    let Some(plain) = open(key, token) else {
        return Ok(None);
    };
    if let Some((ttl, now)) = window {
        let timestamp = token_timestamp(token).ok_or(DecryptError::FernetTimestamp)?;
        // Before 1970 counts as 0: no Fernet token can be older than that.
        let now = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        if let Some(ttl) = ttl {
            if timestamp.saturating_add(ttl.as_secs()) < now {
                return Err(DecryptError::FernetTimestamp);
            }
        }
        if now.saturating_add(MAX_CLOCK_SKEW.as_secs()) < timestamp {
            return Err(DecryptError::FernetTimestamp);
        }
    }
    Ok(Some(plain))
}

/// Authenticates and decrypts a token (`0x80 ‖ timestamp ‖ IV ‖ ciphertext ‖
/// HMAC`, base64url, padded or not): the HMAC first, in constant time, then
/// AES-128-CBC in place in the buffer the token was decoded into, which
/// becomes the plaintext. `None` for anything not authentic, whatever the
/// reason: there is no padding oracle (the padding is only looked at in
/// authentic tokens) and nothing else to tell.
fn open(key: &dyn FernetPrimitives, token: &str) -> Option<Plaintext> {
    // SIMD base64 (strict: non-canonical trailing bits are rejected, as by
    // the `base64` crate the `fernet` crate uses): on large tokens decoding
    // costs more than HMAC-SHA256 and AES-CBC together.
    let mut raw = Zeroizing::new(
        base64_simd::URL_SAFE_NO_PAD
            .decode_to_vec(token.trim_end_matches('='))
            .ok()?,
    );
    let mac_at = raw.len().checked_sub(HMAC_SHA256_LEN)?;
    if mac_at < CIPHERTEXT_AT || raw[0] != VERSION {
        return None;
    }
    let (message, mac) = raw.split_at_mut(mac_at);
    let mac: &[u8; HMAC_SHA256_LEN] = (&*mac).try_into().ok()?;
    key.verify_hmac_sha256(message, mac).ok()?;
    let (head, ciphertext) = message.split_at_mut(CIPHERTEXT_AT);
    let iv: &[u8; AES_BLOCK_LEN] = head[IV_AT..].try_into().ok()?;
    let len = key.aes128_cbc_decrypt_in_place(iv, ciphertext).ok()?;
    raw.copy_within(CIPHERTEXT_AT..CIPHERTEXT_AT + len, 0);
    raw.truncate(len);
    Some(Plaintext::new(raw))
}

/// The timestamp field (seconds since the Unix epoch, big-endian u64 after
/// the version byte) of a Fernet token.
pub(crate) fn token_timestamp(token: &str) -> Option<u64> {
    // 12 base64 characters cover the version byte and the 8 timestamp bytes.
    let head = token.get(..12)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let bytes: [u8; 8] = raw.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl FernetKey {
    /// Encrypts into a Fernet token stamped with the current time.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        self.fernet.encrypt(plaintext)
    }

    /// Encrypts into a Fernet token stamped with `now` (for tests and
    /// reproducible fixtures; the IV is still random).
    pub fn encrypt_at(&self, plaintext: &[u8], now: OffsetDateTime) -> String {
        let now = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        self.fernet.encrypt_at_time(plaintext, now)
    }

    /// Decrypts a Fernet token with this key, without a TTL (like Python's
    /// `Fernet(key).decrypt(token)`), on the default crypto provider (a
    /// [`Keyring`](crate::Keyring) prepares its keys once and is faster).
    pub fn decrypt(&self, token: &str) -> Result<Plaintext, DecryptError> {
        let key = self.primitives(provider::default_provider());
        decrypt(&*key, token, None)?.ok_or(DecryptError::Authentication)
    }

    /// Decrypts a Fernet token with this key, checking its age against
    /// `now`: no older than `ttl` (if given), at most 60 s in the future
    /// (like Python's `Fernet(key).decrypt_at_time(token, ttl, now)`).
    pub fn decrypt_at(
        &self,
        token: &str,
        ttl: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<Plaintext, DecryptError> {
        let key = self.primitives(provider::default_provider());
        decrypt(&*key, token, Some((ttl, now)))?.ok_or(DecryptError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamp_is_read_from_the_token() {
        let key = FernetKey::generate();
        let at = OffsetDateTime::from_unix_timestamp(499_162_800).unwrap();
        let token = key.encrypt_at(b"x", at);
        assert_eq!(token_timestamp(&token), Some(499_162_800));
        assert_eq!(token_timestamp("short"), None);
    }

    #[test]
    fn non_canonical_base64_is_rejected() {
        // 73 bytes (one block): the last base64 character carries 4 unused
        // bits; setting one gives another text for the same bytes, which
        // must not open (no malleable tokens).
        let key = FernetKey::generate();
        let token = key.encrypt(b"hello");
        let unpadded = token.trim_end_matches('=');
        assert_eq!(unpadded.len() % 4, 2);
        let last = unpadded.as_bytes()[unpadded.len() - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        let tweaked_last = char::from(alphabet[index | 1]);
        let tweaked = format!("{}{tweaked_last}==", &unpadded[..unpadded.len() - 1]);
        assert_ne!(tweaked, token);
        assert_eq!(&*key.decrypt(&token).unwrap(), b"hello");
        assert!(key.decrypt(&tweaked).is_err());
        let now = OffsetDateTime::now_utc();
        assert!(key.decrypt_at(&tweaked, None, now).is_err());
    }

    #[test]
    fn future_tokens_readable_without_clock_rejected_with_clock() {
        let key = FernetKey::generate();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let future = now + time::Duration::hours(1);
        let token = key.encrypt_at(b"hello", future);
        assert_eq!(&*key.decrypt(&token).unwrap(), b"hello");
        assert_eq!(
            key.decrypt_at(&token, None, now),
            Err(DecryptError::FernetTimestamp)
        );
        assert_eq!(&*key.decrypt_at(&token, None, future).unwrap(), b"hello");
    }
}
