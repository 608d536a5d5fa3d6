//! Envelope format v1 (see docs/format.md) and format detection.

use std::fmt;

use crate::key::KeyId;

/// The four bytes every v1 envelope starts with.
pub const PREFIX_V1: &str = "mn1:";

/// Length of the v1 header: `mn1:` + 16 hex digits of the key id + `:`.
/// `substr(col, 1, 21)` in SQL is the header, so `GROUP BY` on it counts
/// values per key.
pub const HEADER_LEN: usize = PREFIX_V1.len() + KeyId::HEX_LEN + 1;

/// Length of the random nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// Codec for the envelope body: URL-safe alphabet, no padding, strict
/// (non-zero trailing bits are rejected), so each byte string has exactly
/// one text form. SIMD-accelerated: the body codec is most of an
/// envelope's cost beyond AES-GCM itself.
pub(crate) const BODY_B64: base64_simd::Base64 = base64_simd::URL_SAFE_NO_PAD;

/// Last header byte of the text form.
pub(crate) const TEXT_TERMINATOR: u8 = b':';
/// Last header byte of the binary form.
pub(crate) const BINARY_TERMINATOR: u8 = b'.';

/// Builds the 21-byte v1 header for a key id (text form; the binary form
/// differs in its last byte).
pub(crate) fn header_v1(key_id: KeyId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(PREFIX_V1.as_bytes());
    let mut hex = [0u8; KeyId::HEX_LEN];
    key_id.write_hex(&mut hex);
    h[4..4 + KeyId::HEX_LEN].copy_from_slice(&hex);
    h[HEADER_LEN - 1] = b':';
    h
}

/// The text header of every value under `key_id`: `mn1:<key id>:`. A store
/// matches it to find the values not yet under that key.
///
/// ```
/// use manna_crypto::{text_header, KeyId};
/// let id: KeyId = "fb3cc322b666920d".parse().unwrap();
/// assert_eq!(text_header(id), "mn1:fb3cc322b666920d:");
/// ```
pub fn text_header(key_id: KeyId) -> String {
    String::from_utf8_lossy(&header_v1(key_id)).into_owned()
}

/// The key id part of a value shaped like a text header (`mn1:`, 16
/// characters, `:`), as an aggregate query groups values, without checking
/// that the 16 characters are hex or that a body follows.
///
/// ```
/// use manna_crypto::text_header_key;
/// assert_eq!(text_header_key("mn1:fb3cc322b666920d:AAAA"), Some("fb3cc322b666920d"));
/// assert_eq!(text_header_key("gAAAAABl..."), None);
/// ```
pub fn text_header_key(value: &str) -> Option<&str> {
    let b = value.as_bytes();
    (b.len() >= HEADER_LEN
        && b.starts_with(PREFIX_V1.as_bytes())
        && b[HEADER_LEN - 1] == TEXT_TERMINATOR)
        .then(|| value.get(PREFIX_V1.len()..HEADER_LEN - 1))
        .flatten()
}

/// What the prefix of a value says, before looking at the body.
pub(crate) enum Prefix<'a> {
    /// A well-formed v1 header; the rest is the body.
    V1 {
        header: &'a [u8],
        key_id: KeyId,
        body: &'a [u8],
        /// Binary form (raw body) rather than text (base64url body).
        binary: bool,
    },
    /// `mn<version>:` with a version other than `1` (the digits as stored).
    OtherVersion(&'a str),
    /// Starts with `mn1:` but the header is malformed.
    BrokenV1,
    /// Not an envelope prefix.
    None,
}

/// The most digits a version may have (docs/format.md §7).
const MAX_VERSION_DIGITS: usize = 9;

/// The version digits of a value starting `mn<digits>:`, `mn` followed by 1
/// to [`MAX_VERSION_DIGITS`] ASCII digits and `:`; `None` for anything else.
fn version_digits(value: &[u8]) -> Option<&str> {
    let rest = value.strip_prefix(b"mn")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=MAX_VERSION_DIGITS).contains(&digits) || rest.get(digits) != Some(&b':') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()
}

pub(crate) fn parse_prefix(value: &[u8]) -> Prefix<'_> {
    if let Some(version) = version_digits(value) {
        if version != "1" {
            return Prefix::OtherVersion(version);
        }
        if value.len() < HEADER_LEN {
            return Prefix::BrokenV1;
        }
        let binary = match value[HEADER_LEN - 1] {
            TEXT_TERMINATOR => false,
            BINARY_TERMINATOR => true,
            _ => return Prefix::BrokenV1,
        };
        return match KeyId::parse_hex(&value[4..4 + KeyId::HEX_LEN]) {
            Some(key_id) => Prefix::V1 {
                header: &value[..HEADER_LEN],
                key_id,
                body: &value[HEADER_LEN..],
                binary,
            },
            None => Prefix::BrokenV1,
        };
    }
    Prefix::None
}

/// Length of a text body that decodes to at least nonce + tag.
const MIN_TEXT_BODY: usize = ((NONCE_LEN + TAG_LEN) * 4).div_ceil(3);

/// The decoded length of `text` if it is canonical unpadded base64url (the
/// alphabet only, a possible length, zero unused bits in the last
/// character). Decodes nothing.
fn base64url_len(text: &[u8]) -> Option<usize> {
    (text.len() % 4 != 1
        && text
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && last_char_canonical(text))
    .then_some(text.len() * 3 / 4)
}

/// Whether a text envelope body is structurally valid (canonical base64url
/// of at least nonce + tag bytes). Decodes nothing.
fn text_body_ok(body: &[u8]) -> bool {
    body.len() >= MIN_TEXT_BODY && base64url_len(body).is_some()
}

/// In canonical unpadded base64 the last character's unused low bits are zero.
fn last_char_canonical(body: &[u8]) -> bool {
    let Some(&last) = body.last() else {
        return true;
    };
    let v = match last {
        b'A'..=b'Z' => last - b'A',
        b'a'..=b'z' => last - b'a' + 26,
        b'0'..=b'9' => last - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return false,
    };
    match body.len() % 4 {
        2 => v & 0x0f == 0,
        3 => v & 0x03 == 0,
        _ => true,
    }
}

/// Minimum decoded length of a Fernet token: version, timestamp, IV, one
/// AES block, HMAC.
const FERNET_MIN_LEN: usize = 1 + 8 + 16 + 16 + 32;

/// Whether `value` has the structure of a Fernet token (version byte 0x80,
/// a whole number of AES blocks, HMAC; any number of trailing `=`).
/// Verifies nothing cryptographic, and decodes nothing: `gAAAA` is the
/// version byte 0x80 (with a timestamp below 2^42 s, centuries away), and
/// the rest is the length and the alphabet.
pub(crate) fn is_fernet_token(value: &str) -> bool {
    value.starts_with("gAAAA")
        && base64url_len(value.trim_end_matches('=').as_bytes()).is_some_and(fernet_decoded_len)
}

/// A v1 envelope with a damaged `mn1:` prefix: key-id-shaped bytes 4–19
/// and a terminator at byte 20. Never taken for plaintext.
fn envelope_shaped(v: &[u8]) -> bool {
    v.len() > HEADER_LEN
        && matches!(v[HEADER_LEN - 1], TEXT_TERMINATOR | BINARY_TERMINATOR)
        && v[4..HEADER_LEN - 1].iter().all(u8::is_ascii_hexdigit)
}

/// Whether `n` is a possible decoded length of a Fernet token: version,
/// timestamp, IV, one or more AES blocks, HMAC (57 + 16k bytes, k ≥ 1).
fn fernet_decoded_len(n: usize) -> bool {
    n >= FERNET_MIN_LEN && (n - (1 + 8 + 16 + 32)).is_multiple_of(16)
}

/// A damaged Fernet token (docs/format.md §4): at most one character
/// outside `A–Z a–z 0–9 - _ =`, and the length of a Fernet token, either
/// padded (4·⌈n/3⌉ characters) or, trailing `=` removed, unpadded (⌈4n/3⌉).
/// Never taken for plaintext.
fn fernet_shaped(v: &str) -> bool {
    let odd = v
        .bytes()
        .filter(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=')))
        .count();
    if odd > 1 {
        return false;
    }
    // Padded: 4·⌈n/3⌉ = L holds for n in 3L/4 − 2 ..= 3L/4.
    let total = v.len();
    let padded = total.is_multiple_of(4)
        && (total / 4 * 3).checked_sub(2).is_some_and(|low| {
            (low..=total / 4 * 3).any(|n| fernet_decoded_len(n) && 4 * n.div_ceil(3) == total)
        });
    // Unpadded: ⌈4n/3⌉ = S has the one solution n = ⌊3S/4⌋ when S mod 4 ≠ 1.
    let stripped = v.trim_end_matches('=').len();
    let unpadded = stripped % 4 != 1 && fernet_decoded_len(stripped * 3 / 4);
    padded || unpadded
}

/// Rule 3 of docs/format.md §4: a damaged token, or a token (damaged or
/// not) with ASCII whitespace around it, as a `CHAR(n)` column or a paste
/// leaves it. Never taken for plaintext.
fn looks_damaged(value: &str) -> bool {
    let damaged =
        |v: &str| v.starts_with("gAAAAA") || envelope_shaped(v.as_bytes()) || fernet_shaped(v);
    if damaged(value) {
        return true;
    }
    let trimmed = value.trim_ascii();
    trimmed.len() != value.len()
        && (version_digits(trimmed.as_bytes()).is_some()
            || is_fernet_token(trimmed)
            || damaged(trimmed))
}

/// Whether a value that is not a token can be taken for plain text: no
/// control characters other than tab, CR and LF.
fn looks_like_text(value: &str) -> bool {
    !value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// The format of a stored value, told without decrypting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// An AES-256-GCM envelope (v1) under the named key.
    Aes256Gcm {
        /// The key id in the envelope header.
        key_id: KeyId,
    },
    /// A legacy Fernet token.
    Fernet,
    /// Not a token but plausible unencrypted text (no control characters,
    /// not a damaged token). The empty string counts as plaintext.
    Plaintext,
    /// Anything else: a damaged or truncated token, an envelope of an
    /// unsupported version, binary garbage.
    Unknown,
}

impl Format {
    /// `"aes256gcm"`, `"fernet"`, `"plaintext"` or `"unknown"`: the keys of
    /// the report's `by_format` object.
    pub fn label(&self) -> &'static str {
        match self {
            Format::Aes256Gcm { .. } => "aes256gcm",
            Format::Fernet => "fernet",
            Format::Plaintext => "plaintext",
            Format::Unknown => "unknown",
        }
    }

    /// The key id for an AES-256-GCM envelope.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Format::Aes256Gcm { key_id } => Some(*key_id),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Aes256Gcm { key_id } => write!(f, "aes256gcm({key_id})"),
            other => f.write_str(other.label()),
        }
    }
}

/// Tells the format of a text value without decrypting it and without a
/// keyring. Envelopes and Fernet tokens are checked structurally (prefix,
/// alphabet, lengths), not cryptographically.
///
/// ```
/// use manna_crypto::{inspect, Format};
/// assert_eq!(inspect("hello"), Format::Plaintext);
/// assert_eq!(inspect("mn1:0011223344556677:AAAA"), Format::Unknown); // truncated
/// ```
pub fn inspect(value: &str) -> Format {
    match parse_prefix(value.as_bytes()) {
        Prefix::V1 {
            key_id,
            body,
            binary: false,
            ..
        } => {
            if text_body_ok(body) {
                Format::Aes256Gcm { key_id }
            } else {
                Format::Unknown
            }
        }
        Prefix::V1 { binary: true, .. } | Prefix::OtherVersion(_) | Prefix::BrokenV1 => {
            Format::Unknown
        }
        Prefix::None => {
            if is_fernet_token(value) {
                Format::Fernet
            } else if looks_damaged(value) || !looks_like_text(value) {
                Format::Unknown
            } else {
                Format::Plaintext
            }
        }
    }
}

/// Like [`inspect`], for a value stored as bytes (`BYTEA`/`BLOB`): a binary
/// envelope (header ending in `.`, then raw nonce, ciphertext and tag), or
/// UTF-8 text inspected as by [`inspect`].
pub fn inspect_bytes(value: &[u8]) -> Format {
    match parse_prefix(value) {
        Prefix::V1 {
            key_id,
            body,
            binary: true,
            ..
        } => {
            if body.len() >= NONCE_LEN + TAG_LEN {
                Format::Aes256Gcm { key_id }
            } else {
                Format::Unknown
            }
        }
        Prefix::V1 { binary: false, .. } => match std::str::from_utf8(value) {
            Ok(text) => inspect(text),
            Err(_) => Format::Unknown,
        },
        Prefix::OtherVersion(_) | Prefix::BrokenV1 => Format::Unknown,
        Prefix::None => match std::str::from_utf8(value) {
            Ok(text) => inspect(text),
            Err(_) => Format::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_fixed_length_ascii() {
        let id = KeyId::from_bytes([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        let h = header_v1(id);
        assert_eq!(&h, b"mn1:deadbeef00010203:");
        assert_eq!(HEADER_LEN, 21);
    }

    #[test]
    fn canonical_last_char() {
        // 28 bytes -> 38 chars, 38 % 4 == 2: last char carries 4 unused bits.
        let body = BODY_B64.encode_to_string([0xffu8; 28]);
        assert!(text_body_ok(body.as_bytes()));
        let mut tweaked = body.into_bytes();
        let last = tweaked.len() - 1;
        tweaked[last] = b'_';
        assert!(!text_body_ok(&tweaked));
    }

    #[test]
    fn plaintext_versus_unknown() {
        assert_eq!(inspect(""), Format::Plaintext);
        assert_eq!(inspect("hello world\n"), Format::Plaintext);
        assert_eq!(inspect("bell\u{7}"), Format::Unknown);
        assert_eq!(inspect("gAAAAAbroken"), Format::Unknown);
        assert_eq!(inspect("mn2:whatever"), Format::Unknown);
        assert_eq!(inspect("mn1:nothex"), Format::Unknown);
        assert_eq!(Format::Unknown.label(), "unknown");
        assert_eq!(Format::Fernet.to_string(), "fernet");
    }
}
