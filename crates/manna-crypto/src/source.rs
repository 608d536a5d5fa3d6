//! Key sources: where a [`Keyring`] comes from. A port with three adapters:
//! the environment, a static keyring (tests), and a key file.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::key_file::{parse_instant, NOT_RFC3339};

use crate::error::KeyError;
use crate::key::{AesKey, FernetKey};
use crate::key_file_writer::KeyFileWriter;
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
    #[error("{variable} is not set")]
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
            .filter(|v| !v.trim_ascii().is_empty())
    }

    /// The comma-separated entries of a variable, each parsed as
    /// docs/format.md §1 says; empty entries (a trailing comma) are skipped,
    /// and errors name an entry's 1-based position in the list.
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
            .enumerate()
            .filter(|(_, s)| !s.trim_ascii().is_empty())
            .map(|(i, s)| {
                parse(s).map_err(|source| KeySourceError::InvalidKey {
                    location: format!("{variable} (entry {})", i + 1),
                    reason: source,
                })
            })
            .collect()
    }
}

/// The keys the environment configures.
struct EnvKeys {
    primary: AesKey,
    previous: Vec<AesKey>,
    fernet: Vec<FernetKey>,
    fernet_until: Option<time::OffsetDateTime>,
}

impl EnvKeySource {
    fn read(&self) -> Result<EnvKeys, KeySourceError> {
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
        let fernet_until =
            match self.get(ENV_FERNET_UNTIL) {
                // The value is not echoed: a key pasted into it would be printed.
                Some(until) => Some(parse_instant(until.trim()).ok_or_else(|| {
                    KeySourceError::InvalidSetting {
                        location: ENV_FERNET_UNTIL.to_owned(),
                        reason: NOT_RFC3339.to_owned(),
                    }
                })?),
                None => None,
            };
        Ok(EnvKeys {
            primary,
            previous,
            fernet,
            fernet_until,
        })
    }

    /// The configured keys as key-file text (TOML, see [`FileKeySource`]):
    /// the primary key, the decrypt-only keys and the Fernet keys in order,
    /// `fernet_until` and `accept_plaintext`; what key escrow seals when the
    /// keys come from the environment. The environment holds no dates, so
    /// the entries have none. Fails as [`KeySource::load`] would.
    pub fn key_file(&self) -> Result<Zeroizing<String>, KeySourceError> {
        self.load()?;
        let keys = self.read()?;
        let mut writer = KeyFileWriter::new()
            .primary(&keys.primary, KeyMetadata::default())
            .accept_plaintext(self.accept_plaintext);
        for key in &keys.previous {
            writer = writer.decrypt_only(key, KeyMetadata::default());
        }
        for key in &keys.fernet {
            writer = writer.fernet(key);
        }
        if let Some(until) = keys.fernet_until {
            writer = writer.fernet_until(until);
        }
        Ok(writer.render())
    }
}

impl KeySource for EnvKeySource {
    fn load(&self) -> Result<Keyring, KeySourceError> {
        let keys = self.read()?;
        let mut builder = Keyring::builder()
            .primary(keys.primary)
            .previous_keys(keys.previous)
            .fernet_keys(keys.fernet)
            .accept_plaintext(self.accept_plaintext);
        if let Some(until) = keys.fernet_until {
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
        crate::key_file::parse_key_file(&text, self.format(), &self.path)
    }
}
