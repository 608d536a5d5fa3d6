//! Legacy Fernet through the `fernet` crate (pure-Rust backend), with the
//! token-age checks done here against a supplied clock.

use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::DecryptError;
use crate::key::FernetKey;
use crate::plaintext::Plaintext;

/// Largest accepted clock skew for a token from the future, as in the
/// Fernet specification and Python's `cryptography`.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A "current time" so late that the `fernet` crate's own future-timestamp
/// check can never fire: without a TTL, Python's `Fernet.decrypt` does not
/// check timestamps at all, and tokens written by a host whose clock ran
/// ahead must stay readable. With a clock, we check the window ourselves.
const NO_CLOCK: u64 = u64::MAX - MAX_CLOCK_SKEW.as_secs();

/// Decrypts with one key. `Ok(None)`: not authentic under this key (or not a
/// Fernet token at all). `Err(FernetTimestamp)`: authentic but outside the
/// `(ttl, now)` window.
pub(crate) fn decrypt(
    key: &FernetKey,
    token: &str,
    window: Option<(Option<Duration>, OffsetDateTime)>,
) -> Result<Option<Plaintext>, DecryptError> {
    let Ok(plain) = key.fernet.decrypt_at_time(token, None, NO_CLOCK) else {
        return Ok(None);
    };
    let plain = Plaintext::new(Zeroizing::new(plain));
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
    /// `Fernet(key).decrypt(token)`).
    pub fn decrypt(&self, token: &str) -> Result<Plaintext, DecryptError> {
        decrypt(self, token, None)?.ok_or(DecryptError::Authentication)
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
        decrypt(self, token, Some((ttl, now)))?.ok_or(DecryptError::Authentication)
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
