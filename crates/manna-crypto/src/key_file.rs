//! The key file's model: TOML and JSON read into one typed structure.
//!
//! A key pasted into the wrong field must never be printed, so no message
//! from the parsers is shown: syntax errors give a position, content errors
//! name the field and the entry. The parsed trees and every string taken
//! from them are wiped.

use std::path::Path;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use crate::error::KeyError;
use crate::key::{AesKey, FernetKey, KeyId};
use crate::keyring::{KeyMetadata, Keyring};
use crate::source::{KeyFileFormat, KeySourceError};

/// The file's settings (its `keys` are read entry by entry, so each error
/// names its entry).
#[derive(Deserialize)]
struct Settings {
    #[serde(default, deserialize_with = "flag")]
    accept_plaintext: bool,
    #[serde(default, deserialize_with = "fernet_until")]
    fernet_until: Option<OffsetDateTime>,
}

/// One `keys` entry.
#[derive(Deserialize)]
struct KeyEntry {
    #[serde(default, deserialize_with = "secret")]
    key: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "key_id")]
    id: Option<KeyId>,
    #[serde(default)]
    status: EntryStatus,
    #[serde(default)]
    algorithm: Algorithm,
    #[serde(default, deserialize_with = "created_at")]
    created_at: Option<OffsetDateTime>,
    #[serde(default, deserialize_with = "expires_at")]
    expires_at: Option<OffsetDateTime>,
}

/// An entry's `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum EntryStatus {
    /// The key new values are encrypted under (exactly one AES key).
    Primary,
    /// Read, never written.
    #[default]
    DecryptOnly,
    /// Kept in the file for the record, not loaded.
    Retired,
}

/// An entry's `algorithm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Algorithm {
    /// AES-256-GCM.
    #[default]
    Aes256Gcm,
    /// Legacy Fernet (read only).
    Fernet,
}

/// Messages of this module's own deserializers start with this marker, so
/// they can be told from the parsers' (which may quote a value).
const OURS: &str = "\u{1}";

fn ours<E: de::Error>(message: &str) -> E {
    E::custom(format!("{OURS}{message}"))
}

/// A string field, taken as text into wiped memory; anything else is an
/// error naming `field`.
fn text<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<Zeroizing<String>, D::Error> {
    struct Text<'a>(&'a str);
    impl de::Visitor<'_> for Text<'_> {
        type Value = Zeroizing<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "`{}` as a string", self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Zeroizing::new(v.to_owned()))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(ours(&format!("`{}` must be a string", self.0)))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(ours(&format!("`{}` must be a string", self.0)))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(ours(&format!("`{}` must be a string", self.0)))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(ours(&format!("`{}` must be a string", self.0)))
        }
    }
    d.deserialize_str(Text(field))
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    text(d, "key").map(Some)
}

fn key_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyId>, D::Error> {
    let s = text(d, "id")?;
    s.parse()
        .map(Some)
        .map_err(|_| ours("`id` is not a key id (16 hex digits)"))
}

/// What a date-time setting must be (no value is ever shown).
pub(crate) const NOT_RFC3339: &str = "not an RFC 3339 date-time (2025-01-31T00:00:00Z)";

/// Date-time field `field` as RFC 3339 text (TOML datetimes arrive as text
/// too).
fn instant<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> Result<Option<OffsetDateTime>, D::Error> {
    let bad = || ours(&format!("`{field}` is {NOT_RFC3339}"));
    let s = text(d, field).map_err(|_: D::Error| bad())?;
    parse_instant(&s).map(Some).ok_or_else(bad)
}

fn created_at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    instant(d, "created_at")
}

fn expires_at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    instant(d, "expires_at")
}

fn fernet_until<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    instant(d, "fernet_until")
}

pub(crate) fn parse_instant(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        mut other => {
            wipe_json(&mut other);
            Err(ours("`accept_plaintext` must be true or false"))
        }
    }
}

impl<'de> Deserialize<'de> for EntryStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match text(d, "status")?.as_str() {
            "primary" => Ok(EntryStatus::Primary),
            "decrypt_only" => Ok(EntryStatus::DecryptOnly),
            "retired" => Ok(EntryStatus::Retired),
            _ => Err(ours(
                "`status` is not one of primary, decrypt_only, retired",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match text(d, "algorithm")?.as_str() {
            "aes256gcm" => Ok(Algorithm::Aes256Gcm),
            "fernet" => Ok(Algorithm::Fernet),
            _ => Err(ours("`algorithm` is not one of aes256gcm, fernet")),
        }
    }
}

/// Our message, or a generic one: the parser's own may quote a value.
fn shown(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.strip_prefix(OURS) {
        Some(ours) => ours.to_owned(),
        None => "a field has the wrong type or shape (values are not shown)".to_owned(),
    }
}

/// Parses key-file text (the pure part of
/// [`FileKeySource`](crate::FileKeySource)); `path` is only used in error
/// messages.
pub fn parse_key_file(
    text: &str,
    format: KeyFileFormat,
    path: &Path,
) -> Result<Keyring, KeySourceError> {
    let mut tree = read_tree(text, format, path)?;
    let built = build(&tree, path);
    wipe_json(&mut tree);
    built
}

/// The file as one JSON tree, whatever its syntax (TOML datetimes become
/// RFC 3339 text). The caller wipes it.
fn read_tree(
    text: &str,
    format: KeyFileFormat,
    path: &Path,
) -> Result<serde_json::Value, KeySourceError> {
    let syntax = |format, position| KeySourceError::FileSyntax {
        path: path.to_owned(),
        format,
        position,
    };
    match format {
        KeyFileFormat::Json => serde_json::from_str(text)
            .map_err(|e| syntax("JSON", format!("line {}, column {}", e.line(), e.column()))),
        KeyFileFormat::Toml => {
            let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let position = match e.span() {
                    Some(span) => format!("at byte {}", span.start),
                    None => "position unknown".to_owned(),
                };
                syntax("TOML", position)
            })?;
            let tree = serde_json::Value::Object(
                table
                    .iter()
                    .map(|(k, v)| (k.clone(), toml_to_json(v)))
                    .collect(),
            );
            table.iter_mut().for_each(|(_, v)| wipe_toml(v));
            Ok(tree)
        }
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => J::from(*f),
        toml::Value::Array(items) => J::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn build(tree: &serde_json::Value, path: &Path) -> Result<Keyring, KeySourceError> {
    let content = |message: String| KeySourceError::FileContent {
        path: path.to_owned(),
        message,
    };
    let settings = Settings::deserialize(tree).map_err(|e| {
        let message = shown(&e);
        if message.contains("`fernet_until`") {
            KeySourceError::InvalidSetting {
                location: format!("key file {} (`fernet_until`)", path.display()),
                reason: NOT_RFC3339.to_owned(),
            }
        } else {
            content(message)
        }
    })?;
    let Some(entries) = tree.get("keys").and_then(serde_json::Value::as_array) else {
        return Err(content("expected a `keys` array".to_owned()));
    };
    let mut builder = Keyring::builder().accept_plaintext(settings.accept_plaintext);
    if let Some(until) = settings.fernet_until {
        builder = builder.fernet_until(until);
    }
    let mut primary_seen = false;
    for (i, entry) in entries.iter().enumerate() {
        let n = i + 1;
        if !entry.is_object() {
            return Err(content(format!("keys entry {n} is not a table")));
        }
        let entry = KeyEntry::deserialize(entry)
            .map_err(|e| content(format!("keys entry {n}: {}", shown(&e))))?;
        if entry.status == EntryStatus::Retired {
            continue;
        }
        let key_text = entry
            .key
            .as_ref()
            .ok_or_else(|| content(format!("keys entry {n} has no `key`")))?;
        let invalid = |reason| KeySourceError::InvalidKey {
            location: format!("key file {} (keys entry {n})", path.display()),
            reason,
        };
        let metadata = KeyMetadata {
            created_at: entry.created_at,
            expires_at: entry.expires_at,
        };
        match (entry.algorithm, entry.status) {
            (Algorithm::Aes256Gcm, status) => {
                let key = AesKey::from_base64(key_text).map_err(invalid)?;
                check_id(entry.id, key.id()).map_err(invalid)?;
                if status == EntryStatus::Primary {
                    if primary_seen {
                        return Err(content("more than one key has status `primary`".into()));
                    }
                    primary_seen = true;
                    builder = builder.primary_with_metadata(key, metadata);
                } else {
                    builder = builder.previous_with_metadata(key, metadata);
                }
            }
            (Algorithm::Fernet, EntryStatus::Primary) => {
                return Err(content(format!(
                    "keys entry {n}: a Fernet key cannot be primary (use decrypt_only)"
                )))
            }
            (Algorithm::Fernet, _) => {
                let key = FernetKey::from_base64(key_text).map_err(invalid)?;
                check_id(entry.id, key.id()).map_err(invalid)?;
                builder = builder.fernet(key);
            }
        }
    }
    if !primary_seen {
        return Err(content("no key has status `primary`".into()));
    }
    Ok(builder.build()?)
}

fn check_id(stated: Option<KeyId>, actual: KeyId) -> Result<(), KeyError> {
    match stated {
        Some(stated) if stated != actual => Err(KeyError::KeyIdMismatch { stated, actual }),
        _ => Ok(()),
    }
}

/// Wipes every string of a parsed TOML tree (the key strings among them).
fn wipe_toml(value: &mut toml::Value) {
    match value {
        toml::Value::String(s) => s.zeroize(),
        toml::Value::Array(items) => items.iter_mut().for_each(wipe_toml),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| wipe_toml(v)),
        _ => {}
    }
}

/// Wipes every string of a parsed JSON tree (the key strings among them).
pub(crate) fn wipe_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}
