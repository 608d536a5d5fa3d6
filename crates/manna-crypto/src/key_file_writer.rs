//! Renders keys to the TOML key-file text [`FileKeySource`](crate::FileKeySource)
//! reads: what is escrowed (see the `escrow` module) and what an operator
//! writes after generating or rotating keys.

use std::fmt;
use std::fmt::Write as _;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::key::{AesKey, FernetKey, KeyId};
use crate::keyring::KeyMetadata;

/// One key of the file: base64 text in wiped memory, and what is known
/// about it.
struct Entry {
    key: Zeroizing<String>,
    id: KeyId,
    status: &'static str,
    algorithm: &'static str,
    metadata: KeyMetadata,
}

/// Builds key-file text (TOML) from keys: every key with its id, status,
/// algorithm and dates, in the order given (Fernet keys keep theirs: the
/// first one is the rollback target).
///
/// A [`Keyring`](crate::Keyring) does not keep raw key material (only the
/// ciphers made from it), so the text is built from the keys themselves, as
/// loaded from the environment or a key file.
///
/// ```
/// use manna_crypto::{parse_key_file, AesKey, KeyFileFormat, KeyFileWriter, KeyMetadata};
///
/// let primary = AesKey::generate();
/// let id = primary.id();
/// let text = KeyFileWriter::new()
///     .primary(&primary, KeyMetadata::default())
///     .decrypt_only(&AesKey::generate(), KeyMetadata::default())
///     .render();
/// let keyring = parse_key_file(&text, KeyFileFormat::Toml, "escrow.toml".as_ref()).unwrap();
/// assert_eq!(keyring.primary_key_id(), id);
/// ```
#[derive(Default)]
pub struct KeyFileWriter {
    entries: Vec<Entry>,
    fernet_until: Option<OffsetDateTime>,
    accept_plaintext: bool,
}

impl fmt::Debug for KeyFileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFileWriter")
            .field(
                "key_ids",
                &self.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            )
            .field("fernet_until", &self.fernet_until)
            .field("accept_plaintext", &self.accept_plaintext)
            .finish_non_exhaustive()
    }
}

impl KeyFileWriter {
    /// An empty key file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the primary AES key (give exactly one).
    pub fn primary(self, key: &AesKey, metadata: KeyMetadata) -> Self {
        self.aes(key, "primary", metadata)
    }

    /// Adds a decrypt-only AES key.
    pub fn decrypt_only(self, key: &AesKey, metadata: KeyMetadata) -> Self {
        self.aes(key, "decrypt_only", metadata)
    }

    /// Adds a retired AES key: kept in the file for the record, not loaded.
    pub fn retired(self, key: &AesKey, metadata: KeyMetadata) -> Self {
        self.aes(key, "retired", metadata)
    }

    fn aes(mut self, key: &AesKey, status: &'static str, metadata: KeyMetadata) -> Self {
        self.entries.push(Entry {
            key: key.to_base64(),
            id: key.id(),
            status,
            algorithm: "aes256gcm",
            metadata,
        });
        self
    }

    /// Adds a legacy Fernet key (decrypt-only; the first one added is the
    /// rollback target).
    pub fn fernet(mut self, key: &FernetKey) -> Self {
        self.entries.push(Entry {
            key: key.to_base64(),
            id: key.id(),
            status: "decrypt_only",
            algorithm: "fernet",
            metadata: KeyMetadata::default(),
        });
        self
    }

    /// Sets `fernet_until` (see [`KeyringBuilder::fernet_until`](crate::KeyringBuilder::fernet_until)).
    pub fn fernet_until(mut self, until: OffsetDateTime) -> Self {
        self.fernet_until = Some(until);
        self
    }

    /// Sets `accept_plaintext`.
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    /// The TOML text, in memory wiped on drop (the buffer is sized up front,
    /// so it is never reallocated and no copy of a key is left behind).
    pub fn render(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(256 + 512 * self.entries.len()));
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "# manna key file")?;
        writeln!(out, "accept_plaintext = {}", self.accept_plaintext)?;
        if let Some(until) = self.fernet_until {
            writeln!(out, "fernet_until = {}", instant(until))?;
        }
        for e in &self.entries {
            writeln!(out)?;
            writeln!(out, "[[keys]]")?;
            out.push_str("key = \"");
            out.push_str(&e.key);
            out.push_str("\"\n");
            writeln!(out, "id = \"{}\"", e.id)?;
            writeln!(out, "status = \"{}\"", e.status)?;
            writeln!(out, "algorithm = \"{}\"", e.algorithm)?;
            if let Some(created) = e.metadata.created_at {
                writeln!(out, "created_at = {}", instant(created))?;
            }
            if let Some(expires) = e.metadata.expires_at {
                writeln!(out, "expires_at = {}", instant(expires))?;
            }
        }
        Ok(())
    }
}

/// An instant as a TOML offset datetime (RFC 3339).
fn instant(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
