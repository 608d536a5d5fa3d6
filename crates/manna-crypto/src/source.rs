//! Key sources: where a [`Keyring`] comes from. A port with three adapters:
//! the environment, a static keyring (tests), and a key file.

use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KeyError;
use crate::key::{AesKey, FernetKey, KeyId};
use crate::keyring::{KeyMetadata, Keyring};

/// Primary AES-256 key, base64 of 32 bytes.
pub const ENV_AES_KEY: &str = "MANNA_ENCRYPTION_KEY_AES256";
/// Comma-separated decrypt-only AES-256 keys (rotation).
pub const ENV_AES_PREVIOUS: &str = "MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS";
/// Comma-separated legacy Fernet keys, first one first (`MultiFernet` order).
pub const ENV_FERNET_KEYS: &str = "MANNA_ENCRYPTION_KEY";
/// When Fernet reading ends (RFC 3339, e.g. `2027-01-01T00:00:00Z`):
/// [`KeyringBuilder::fernet_until`](crate::KeyringBuilder::fernet_until).
pub const ENV_FERNET_UNTIL: &str = "MANNA_ENCRYPTION_FERNET_UNTIL";

/// Loads a keyring. Implement it to take keys from a secret manager.
pub trait KeySource: Send + Sync {
    /// Builds the keyring from the source.
    fn load(&self) -> Result<Keyring, KeySourceError>;
}

/// A key source could not produce a keyring. Messages name variables, files
/// and positions, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeySourceError {
    /// A required environment variable is unset or empty.
    #[error("{variable} is not set: generate a key with `cargo xtask keygen` and export it")]
    MissingVariable {
        /// The variable's name.
        variable: &'static str,
    },
    /// The primary-key variable holds a comma-separated list.
    #[error(
        "{ENV_AES_KEY} holds several keys: it takes exactly one (the primary); \
         put previous keys in {ENV_AES_PREVIOUS}"
    )]
    SeveralPrimaryKeys,
    /// One key could not be parsed.
    // The cause is part of the message, so it is not also a `source()`:
    // error reports that walk the chain would print it twice.
    #[error("{location}: {reason}")]
    InvalidKey {
        /// Where the key is: a variable and entry number, or a file entry.
        location: String,
        /// What is wrong with it.
        reason: KeyError,
    },
    /// A setting that is not a key could not be parsed (the setting and
    /// what was expected are named; the value is not shown).
    #[error("{location}: {reason}")]
    InvalidSetting {
        /// Where the setting is: a variable, or a key file's field.
        location: String,
        /// What was expected.
        reason: String,
    },
    /// The keys parse but do not form a valid keyring.
    #[error(transparent)]
    Keyring(#[from] KeyError),
    /// The key file cannot be read.
    #[error("cannot read key file {}: {kind}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error kind.
        kind: std::io::ErrorKind,
    },
    /// The key file is not valid TOML/JSON (the position only: parser
    /// messages may quote the file, which holds keys).
    #[error("key file {} is not valid {format} ({position})", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// `"TOML"` or `"JSON"`.
        format: &'static str,
        /// Where the parser stopped.
        position: String,
    },
    /// The key file parses but its content is wrong.
    #[error("key file {}: {message}", path.display())]
    FileContent {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a key).
        message: String,
    },
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Keys from the environment: [`ENV_AES_KEY`] (required),
/// [`ENV_AES_PREVIOUS`] and [`ENV_FERNET_KEYS`] (optional, comma-separated),
/// and [`ENV_FERNET_UNTIL`] (optional, RFC 3339).
///
/// Tests pass their own lookup instead of mutating the process environment:
///
/// ```
/// use manna_crypto::{AesKey, EnvKeySource, KeySource};
/// let key = AesKey::generate();
/// let text = key.to_base64();
/// let source = EnvKeySource::from_lookup(move |name| {
///     (name == "MANNA_ENCRYPTION_KEY_AES256").then(|| text.to_string())
/// });
/// assert_eq!(source.load().expect("keyring").primary_key_id(), key.id());
/// ```
pub struct EnvKeySource {
    lookup: Box<Lookup>,
    accept_plaintext: bool,
}

impl std::fmt::Debug for EnvKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvKeySource")
            .field("accept_plaintext", &self.accept_plaintext)
            .finish_non_exhaustive()
    }
}

impl Default for EnvKeySource {
    fn default() -> Self {
        Self::new()
    }
}

impl EnvKeySource {
    /// Reads the process environment.
    pub fn new() -> Self {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads variables through `lookup` (name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        EnvKeySource {
            lookup: Box::new(lookup),
            accept_plaintext: false,
        }
    }

    /// Whether the loaded keyring accepts plaintext (default `false`).
    #[must_use]
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    fn get(&self, name: &str) -> Option<Zeroizing<String>> {
        (self.lookup)(name)
            .map(Zeroizing::new)
            .filter(|v| !v.trim().is_empty())
    }

    /// The comma-separated entries of a variable, with their 1-based position.
    fn entries<T>(
        &self,
        variable: &'static str,
        parse: impl Fn(&str) -> Result<T, KeyError>,
    ) -> Result<Vec<T>, KeySourceError> {
        let Some(value) = self.get(variable) else {
            return Ok(Vec::new());
        };
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| {
                parse(s).map_err(|source| KeySourceError::InvalidKey {
                    location: format!("{variable} (entry {})", i + 1),
                    reason: source,
                })
            })
            .collect()
    }
}

impl KeySource for EnvKeySource {
    fn load(&self) -> Result<Keyring, KeySourceError> {
        let primary = self
            .get(ENV_AES_KEY)
            .ok_or(KeySourceError::MissingVariable {
                variable: ENV_AES_KEY,
            })?;
        if primary.contains(',') {
            return Err(KeySourceError::SeveralPrimaryKeys);
        }
        let primary =
            AesKey::from_base64(&primary).map_err(|source| KeySourceError::InvalidKey {
                location: ENV_AES_KEY.to_owned(),
                reason: source,
            })?;
        let previous = self.entries(ENV_AES_PREVIOUS, AesKey::from_base64)?;
        let fernet = self.entries(ENV_FERNET_KEYS, FernetKey::from_base64)?;
        let mut builder = Keyring::builder()
            .primary(primary)
            .previous_keys(previous)
            .fernet_keys(fernet)
            .accept_plaintext(self.accept_plaintext);
        if let Some(until) = self.get(ENV_FERNET_UNTIL) {
            // The value is not echoed: a key pasted into it would be printed.
            let until =
                parse_instant(until.trim()).ok_or_else(|| KeySourceError::InvalidSetting {
                    location: ENV_FERNET_UNTIL.to_owned(),
                    reason: NOT_RFC3339.to_owned(),
                })?;
            builder = builder.fernet_until(until);
        }
        Ok(builder.build()?)
    }
}

/// A fixed keyring (tests, or keys obtained elsewhere).
#[derive(Debug, Clone)]
pub struct StaticKeySource {
    keyring: Keyring,
}

impl StaticKeySource {
    /// Serves clones of `keyring`.
    pub fn new(keyring: Keyring) -> Self {
        StaticKeySource { keyring }
    }
}

impl KeySource for StaticKeySource {
    fn load(&self) -> Result<Keyring, KeySourceError> {
        Ok(self.keyring.clone())
    }
}

/// Syntax of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileFormat {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

/// Keys from a TOML or JSON key file, which also records when each key was
/// created and when it expires, so [`Keyring::status`] can warn about key
/// age (rotation due after 90 days, expiry within 30 days).
///
/// ```toml
/// accept_plaintext = false            # optional
/// fernet_until = 2027-01-01T00:00:00Z # optional, RFC 3339: Fernet refused from then on
///
/// [[keys]]
/// key = "<base64 of 32 bytes>"
/// id = "db4daed658e3313c"             # optional; checked against the key
/// status = "primary"                  # primary | decrypt_only | retired
/// algorithm = "aes256gcm"             # aes256gcm (default) | fernet
/// created_at = 2025-01-01T00:00:00Z   # optional, RFC 3339
/// expires_at = 2025-07-01T00:00:00Z   # optional, RFC 3339
/// ```
///
/// JSON has the same shape: `{"accept_plaintext": false, "fernet_until":
/// "2027-01-01T00:00:00Z", "keys": [{"key": …}]}`.
/// Exactly one AES key has status `primary`; `retired` keys are kept in the
/// file for the record and not loaded. Fernet keys are loaded in file order
/// (their status must be `decrypt_only` or `retired`).
#[derive(Debug, Clone)]
pub struct FileKeySource {
    path: PathBuf,
}

impl FileKeySource {
    /// A key file; the format follows the extension (`.json` is JSON,
    /// anything else TOML).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileKeySource { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A warning when the file can be read by its group or by others (Unix
    /// mode bits `0o077`), as ssh warns about private keys; `None` when it
    /// is private, cannot be inspected, or on other platforms. Loading does
    /// not refuse such a file: callers show the warning.
    pub fn permission_warning(&self) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&self.path).ok()?.permissions().mode();
            (mode & 0o077 != 0).then(|| {
                format!(
                    "key file {} is accessible by group or others (mode {:03o}):                      restrict it with `chmod 600 {}`",
                    self.path.display(),
                    mode & 0o777,
                    self.path.display()
                )
            })
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    fn format(&self) -> KeyFileFormat {
        match self.path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => KeyFileFormat::Json,
            _ => KeyFileFormat::Toml,
        }
    }
}

impl KeySource for FileKeySource {
    fn load(&self) -> Result<Keyring, KeySourceError> {
        let text = Zeroizing::new(std::fs::read_to_string(&self.path).map_err(|e| {
            KeySourceError::FileRead {
                path: self.path.clone(),
                kind: e.kind(),
            }
        })?);
        parse_key_file(&text, self.format(), &self.path)
    }
}

/// One `[[keys]]` entry, fields as text. Every field is wiped on drop: a
/// key may have been pasted into any of them.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct RawKey {
    key: Option<String>,
    id: Option<String>,
    status: Option<String>,
    algorithm: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
}

/// Parses key-file text (the pure part of [`FileKeySource`]); `path` is
/// only used in error messages.
pub fn parse_key_file(
    text: &str,
    format: KeyFileFormat,
    path: &Path,
) -> Result<Keyring, KeySourceError> {
    let content = |message: String| KeySourceError::FileContent {
        path: path.to_owned(),
        message,
    };
    let mut raw = match format {
        KeyFileFormat::Toml => read_toml(text, path)?,
        KeyFileFormat::Json => read_json(text, path)?,
    }
    .map_err(content)?;

    let mut builder = Keyring::builder().accept_plaintext(raw.accept_plaintext);
    if let Some(until) = raw.fernet_until.as_deref() {
        // The value is not echoed: a key pasted into it would be printed.
        let until = parse_instant(until).ok_or_else(|| KeySourceError::InvalidSetting {
            location: format!("key file {} (`fernet_until`)", path.display()),
            reason: NOT_RFC3339.to_owned(),
        })?;
        builder = builder.fernet_until(until);
    }
    let raw_keys = std::mem::take(&mut raw.keys);
    let mut primary_seen = false;
    for (i, mut raw) in raw_keys.into_iter().enumerate() {
        let n = i + 1;
        let status = raw.status.as_deref().unwrap_or("decrypt_only");
        if status == "retired" {
            continue;
        }
        let key_text = raw
            .key
            .take()
            .map(Zeroizing::new)
            .ok_or_else(|| content(format!("keys entry {n} has no `key`")))?;
        let invalid = |source| KeySourceError::InvalidKey {
            location: format!("key file {} (keys entry {n})", path.display()),
            reason: source,
        };
        let metadata = KeyMetadata {
            created_at: parse_time(raw.created_at.as_deref(), n, "created_at").map_err(content)?,
            expires_at: parse_time(raw.expires_at.as_deref(), n, "expires_at").map_err(content)?,
        };
        let stated_id = match raw.id.as_deref() {
            Some(s) => Some(
                s.parse::<KeyId>()
                    .map_err(|e| content(format!("keys entry {n}: {e}")))?,
            ),
            None => None,
        };
        match raw.algorithm.as_deref().unwrap_or("aes256gcm") {
            "aes256gcm" => {
                let key = AesKey::from_base64(&key_text).map_err(invalid)?;
                check_id(stated_id, key.id()).map_err(invalid)?;
                match status {
                    "primary" if primary_seen => {
                        return Err(content("more than one key has status `primary`".into()))
                    }
                    "primary" => {
                        primary_seen = true;
                        builder = builder.primary_with_metadata(key, metadata);
                    }
                    "decrypt_only" => builder = builder.previous_with_metadata(key, metadata),
                    _ => return Err(content(unknown_status(n))),
                }
            }
            "fernet" => {
                let key = FernetKey::from_base64(&key_text).map_err(invalid)?;
                check_id(stated_id, key.id()).map_err(invalid)?;
                match status {
                    "decrypt_only" => builder = builder.fernet(key),
                    "primary" => {
                        return Err(content(format!(
                            "keys entry {n}: a Fernet key cannot be primary (use decrypt_only)"
                        )))
                    }
                    _ => return Err(content(unknown_status(n))),
                }
            }
            _ => {
                // The value is not echoed: a key pasted into the wrong field
                // would otherwise be printed.
                return Err(content(format!(
                    "keys entry {n}: `algorithm` is not one of aes256gcm, fernet"
                )));
            }
        }
    }
    if !primary_seen {
        return Err(content("no key has status `primary`".into()));
    }
    Ok(builder.build()?)
}

/// The field is named, its value never shown: a key pasted into `status`
/// would otherwise be printed.
fn unknown_status(n: usize) -> String {
    format!("keys entry {n}: `status` is not one of primary, decrypt_only, retired")
}

fn check_id(stated: Option<KeyId>, actual: KeyId) -> Result<(), KeyError> {
    match stated {
        Some(stated) if stated != actual => Err(KeyError::KeyIdMismatch { stated, actual }),
        _ => Ok(()),
    }
}

/// What a date-time setting must be (no value is ever shown).
const NOT_RFC3339: &str = "not an RFC 3339 date-time (2025-01-31T00:00:00Z)";

fn parse_instant(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn parse_time(
    value: Option<&str>,
    n: usize,
    field: &str,
) -> Result<Option<OffsetDateTime>, String> {
    value
        .map(|s| {
            parse_instant(s).ok_or_else(|| format!("keys entry {n}: `{field}` is {NOT_RFC3339}"))
        })
        .transpose()
}

/// A key file's content, fields as text. Every string is wiped on drop: a
/// key may have been pasted into any of them.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct RawKeyFile {
    accept_plaintext: bool,
    fernet_until: Option<String>,
    keys: Vec<RawKey>,
}

type RawFile = Result<RawKeyFile, String>;

fn read_toml(text: &str, path: &Path) -> Result<RawFile, KeySourceError> {
    let mut table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| KeySourceError::FileSyntax {
                path: path.to_owned(),
                format: "TOML",
                position: match e.span() {
                    Some(span) => format!("at byte {}", span.start),
                    None => "position unknown".to_owned(),
                },
            })?;
    let text_of = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        _ => None,
    };
    let raw = (|| {
        let accept_plaintext = match table.get("accept_plaintext") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err("`accept_plaintext` must be true or false".to_owned()),
        };
        let fernet_until = match table.get("fernet_until") {
            None => None,
            Some(v) => Some(text_of(v).ok_or_else(|| format!("`fernet_until` is {NOT_RFC3339}"))?),
        };
        let Some(toml::Value::Array(entries)) = table.get("keys") else {
            return Err("expected a `[[keys]]` array".to_owned());
        };
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let toml::Value::Table(t) = entry else {
                return Err(format!("keys entry {} is not a table", i + 1));
            };
            let field = |name: &str| t.get(name).and_then(text_of);
            keys.push(RawKey {
                key: field("key"),
                id: field("id"),
                status: field("status"),
                algorithm: field("algorithm"),
                created_at: field("created_at"),
                expires_at: field("expires_at"),
            });
        }
        Ok(RawKeyFile {
            accept_plaintext,
            fernet_until,
            keys,
        })
    })();
    for (_, value) in table.iter_mut() {
        wipe_toml(value);
    }
    Ok(raw)
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
fn wipe_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}

fn read_json(text: &str, path: &Path) -> Result<RawFile, KeySourceError> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| KeySourceError::FileSyntax {
            path: path.to_owned(),
            format: "JSON",
            position: format!("line {}, column {}", e.line(), e.column()),
        })?;
    let raw = (|| {
        let accept_plaintext = match value.get("accept_plaintext") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err("`accept_plaintext` must be true or false".to_owned()),
        };
        let fernet_until = match value.get("fernet_until") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("`fernet_until` is {NOT_RFC3339}")),
        };
        let Some(serde_json::Value::Array(entries)) = value.get("keys") else {
            return Err("expected a `keys` array".to_owned());
        };
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let serde_json::Value::Object(o) = entry else {
                return Err(format!("keys entry {} is not an object", i + 1));
            };
            let field = |name: &str| o.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            keys.push(RawKey {
                key: field("key"),
                id: field("id"),
                status: field("status"),
                algorithm: field("algorithm"),
                created_at: field("created_at"),
                expires_at: field("expires_at"),
            });
        }
        Ok(RawKeyFile {
            accept_plaintext,
            fernet_until,
            keys,
        })
    })();
    wipe_json(&mut value);
    Ok(raw)
}
