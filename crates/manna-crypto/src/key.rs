//! Key material: AES-256 keys, legacy Fernet keys and their public ids.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{KeyError, KeyKind};

/// Length in bytes of an AES-256 key and of a Fernet key (both 32 bytes).
pub const KEY_LEN: usize = 32;

/// Length in bytes of a [`KeyId`] (rendered as twice as many hex digits).
pub const KEY_ID_LEN: usize = 8;

/// HMAC message used to derive the id of an AES-256 key (see docs/format.md).
pub(crate) const AES_KEY_ID_LABEL: &[u8] = b"manna-crypto/v1/aes256gcm-key-id";
/// HMAC message used to derive the fingerprint of a Fernet key.
pub(crate) const FERNET_KEY_ID_LABEL: &[u8] = b"manna-crypto/v1/fernet-key-id";

/// Public identifier of a key: the first 8 bytes of
/// `HMAC-SHA256(key = key material, message = fixed label)`, shown as 16
/// lowercase hex digits.
///
/// The id is deterministic (the same key has the same id on every machine,
/// so an environment-only configuration works) and reveals nothing usable
/// about the key: HMAC-SHA256 is a pseudo-random function, so the id is a
/// one-way commitment, and 64 bits make an accidental collision between the
/// handful of keys of a keyring negligible (≈ n²/2⁶⁵). Keyrings still reject
/// duplicate ids when they are built.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// Length of the id's text form (lowercase hex digits).
    pub const HEX_LEN: usize = KEY_ID_LEN * 2;

    /// `ids` as text for messages: comma-separated, or `none`.
    ///
    /// ```
    /// use manna_crypto::KeyId;
    /// assert_eq!(KeyId::list(&[]), "none");
    /// ```
    pub fn list(ids: &[KeyId]) -> String {
        if ids.is_empty() {
            return "none".to_owned();
        }
        ids.iter()
            .map(KeyId::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn derive(material: &[u8; KEY_LEN], label: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(material)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(label);
        let digest = mac.finalize().into_bytes();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// The id's raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    /// Builds an id from its raw bytes (for decoders and tests; ids are
    /// normally derived from a key with [`AesKey::id`]).
    pub fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        KeyId(bytes)
    }

    /// Writes the 16 lowercase hex digits into `out`.
    pub(crate) fn write_hex(&self, out: &mut [u8; Self::HEX_LEN]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
    }

    /// Parses exactly 16 lowercase hex digits (uppercase is rejected so that
    /// every id has exactly one text form).
    pub(crate) fn parse_hex(s: &[u8]) -> Option<Self> {
        /// Lowercase hex digit values; 0xff marks every other byte.
        const NIBBLE: [u8; 256] = {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        };
        if s.len() != Self::HEX_LEN {
            return None;
        }
        let mut id = [0u8; KEY_ID_LEN];
        let mut bad = 0u8;
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
            bad |= hi | lo;
            id[i] = (hi << 4) | (lo & 0x0f);
        }
        (bad & 0xf0 == 0).then_some(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; Self::HEX_LEN];
        self.write_hex(&mut hex);
        // The buffer only holds ASCII hex digits.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Error returned when parsing a [`KeyId`] from text fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key id: expected {} lowercase hex digits", KeyId::HEX_LEN)]
pub struct ParseKeyIdError;

impl FromStr for KeyId {
    type Err = ParseKeyIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::parse_hex(s.as_bytes()).ok_or(ParseKeyIdError)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Decodes a key as docs/format.md §1 spells it: surrounding ASCII
/// whitespace ignored, any number of trailing `=` ignored, the standard
/// (`+/`) and URL-safe (`-_`) alphabets both accepted (mixed too), exactly
/// 32 bytes, canonical (unused low bits of the last character zero). Every
/// intermediate copy is zeroized.
pub(crate) fn decode_key_base64(input: &str, kind: KeyKind) -> Result<[u8; KEY_LEN], KeyError> {
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Err(KeyError::Empty { kind });
    }
    if looks_like_token(trimmed) {
        return Err(KeyError::LooksLikeToken { kind });
    }
    let unpadded = trimmed.trim_end_matches('=');
    let normalized: Zeroizing<String> = Zeroizing::new(
        unpadded
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect(),
    );
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(normalized.as_bytes())
            .map_err(|_| KeyError::InvalidBase64 { kind })?,
    );
    if decoded.len() != KEY_LEN {
        return Err(KeyError::WrongLength {
            kind,
            actual: decoded.len(),
        });
    }
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&decoded);
    Ok(out)
}

/// A ciphertext pasted where a key belongs: our envelope or a Fernet token
/// (a Fernet token is at least 100 characters; a key is 43–44).
fn looks_like_token(s: &str) -> bool {
    s.starts_with("mn1:") || (s.starts_with("gAAAAA") && s.len() > 60)
}

/// A 256-bit AES-GCM key.
///
/// The key material is zeroized on drop and never printed: `Debug` shows the
/// key id only.
///
/// ```
/// use manna_crypto::AesKey;
/// let key = AesKey::generate();
/// let text = key.to_base64();
/// let again = AesKey::from_base64(&text).expect("round trip");
/// assert_eq!(key.id(), again.id());
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesKey {
    bytes: [u8; KEY_LEN],
    #[zeroize(skip)]
    id: KeyId,
}

impl AesKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// Wraps 32 bytes of key material. The caller's copy is not zeroized;
    /// prefer [`AesKey::generate`] or [`AesKey::from_base64`].
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let id = KeyId::derive(&bytes, AES_KEY_ID_LABEL);
        AesKey { bytes, id }
    }

    /// Parses a key written as base64 of 32 bytes, standard or URL-safe
    /// alphabet, padded or not (surrounding whitespace is ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut bytes = decode_key_base64(text, KeyKind::Aes256)?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as padded standard base64 (the form `keygen` prints), in a
    /// string that is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes))
    }

    pub(crate) fn material(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A legacy Fernet key (16 bytes signing key followed by 16 bytes AES-128
/// key, URL-safe base64 as Python's `Fernet.generate_key()` prints it).
///
/// Zeroized on drop; `Debug` shows a fingerprint id only.
#[derive(Clone)]
pub struct FernetKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
    pub(crate) fernet: fernet::Fernet,
}

impl FernetKey {
    /// Generates a fresh Fernet key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// Wraps 32 bytes of Fernet key material (signing key || encryption key).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let text = Zeroizing::new(base64::engine::general_purpose::URL_SAFE.encode(*bytes));
        let fernet = fernet::Fernet::new(&text)
            .expect("fernet accepts any 32 bytes in URL-safe base64, which is what we pass");
        let id = KeyId::derive(&bytes, FERNET_KEY_ID_LABEL);
        FernetKey { bytes, id, fernet }
    }

    /// Parses a Fernet key: base64 of 32 bytes, URL-safe (as Python prints
    /// it) or standard alphabet, padded or not.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut bytes = decode_key_base64(text, KeyKind::Fernet)?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// A public fingerprint of the key (same derivation as [`KeyId`], with a
    /// Fernet-specific label), for status output and metrics.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as padded URL-safe base64, the form Python's `cryptography`
    /// uses, in a string that is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE.encode(*self.bytes))
    }

    /// The key's primitives (HMAC-SHA256 under the first half, AES-128-CBC
    /// under the second) on `provider`.
    pub(crate) fn primitives(
        &self,
        provider: &dyn crate::provider::Provider,
    ) -> Box<dyn crate::provider::FernetPrimitives> {
        let (signing, encryption) = self.bytes.split_at(KEY_LEN / 2);
        provider.fernet(
            signing.try_into().expect("16 bytes"),
            encryption.try_into().expect("16 bytes"),
        )
    }

    pub(crate) fn same_material_as(&self, aes: &AesKey) -> bool {
        self.bytes.ct_eq(aes.material()).into()
    }

    pub(crate) fn same_material(&self, other: &FernetKey) -> bool {
        self.bytes.ct_eq(&*other.bytes).into()
    }
}

impl fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FernetKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_id_hex_round_trip() {
        let id = AesKey::from_bytes([7; 32]).id();
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert!(text
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(text.parse::<KeyId>().unwrap(), id);
        assert!(text.to_uppercase().parse::<KeyId>().is_err());
        assert!("abc".parse::<KeyId>().is_err());
    }

    #[test]
    fn key_id_is_deterministic_and_label_separated() {
        let a = AesKey::from_bytes([1; 32]);
        let b = AesKey::from_bytes([1; 32]);
        let f = FernetKey::from_bytes([1; 32]);
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), f.id());
        assert_ne!(a.id(), AesKey::from_bytes([2; 32]).id());
    }

    #[test]
    fn base64_alphabets_and_padding_accepted() {
        let bytes: [u8; 32] =
            core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(251));
        let std = base64::engine::general_purpose::STANDARD.encode(bytes);
        let url = base64::engine::general_purpose::URL_SAFE.encode(bytes);
        assert!(
            std.contains('+') || std.contains('/'),
            "test bytes must exercise the alphabets"
        );
        let id = AesKey::from_bytes(bytes).id();
        for text in [
            std.clone(),
            url.clone(),
            std.trim_end_matches('=').to_owned(),
            url.trim_end_matches('=').to_owned(),
            format!("  {std}\n"),
        ] {
            assert_eq!(AesKey::from_base64(&text).unwrap().id(), id, "{text}");
        }
    }

    #[test]
    fn bad_keys_are_named_plainly() {
        assert!(matches!(
            AesKey::from_base64(""),
            Err(KeyError::Empty { .. })
        ));
        assert!(matches!(
            AesKey::from_base64("not base64!!"),
            Err(KeyError::InvalidBase64 { .. })
        ));
        assert!(matches!(
            AesKey::from_base64("AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(KeyError::WrongLength { actual: 16, .. })
        ));
        let token = fernet::Fernet::new(&fernet::Fernet::generate_key())
            .unwrap()
            .encrypt(b"x");
        assert!(matches!(
            AesKey::from_base64(&token),
            Err(KeyError::LooksLikeToken { .. })
        ));
        assert!(matches!(
            FernetKey::from_base64("AAAA"),
            Err(KeyError::WrongLength { actual: 3, .. })
        ));
    }

    #[test]
    fn debug_shows_id_only() {
        let key = AesKey::from_bytes([0xab; 32]);
        let dbg = format!("{key:?}");
        assert!(dbg.contains(&key.id().to_string()));
        assert!(!dbg.contains(key.to_base64().as_str()));
        assert!(!dbg.to_lowercase().contains("abab"));
        let fkey = FernetKey::from_bytes([0xab; 32]);
        let dbg = format!("{fkey:?}");
        assert!(!dbg.contains(fkey.to_base64().as_str()));
        assert!(!dbg.to_lowercase().contains("abab"));
    }

    #[test]
    fn to_base64_round_trips() {
        let k = AesKey::generate();
        assert_eq!(AesKey::from_base64(&k.to_base64()).unwrap().id(), k.id());
        let f = FernetKey::generate();
        let again = FernetKey::from_base64(&f.to_base64()).unwrap();
        assert_eq!(again.id(), f.id());
        assert!(again.same_material(&f));
    }
}
