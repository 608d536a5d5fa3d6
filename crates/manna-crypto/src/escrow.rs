//! Key escrow: a key file encrypted to one or more escrow recipients in the
//! [age](https://age-encryption.org) format (X25519 recipients, ASCII
//! armor), so that keys lost with their servers can be recovered by whoever
//! holds an escrow identity.
//!
//! - [`seal`] checks that the text is a key file that loads, then encrypts
//!   it to every recipient (`age1…` public keys): any one of them can open it.
//! - [`open`] decrypts with an identity file (`AGE-SECRET-KEY-1…` lines, as
//!   `age-keygen` writes them) and returns the key-file text in wiped memory,
//!   after checking it loads.
//!
//! Escrow at every rotation: the escrowed file must hold every key that
//! still decrypts some row. See docs/operations.md.
//!
//! ```
//! use manna_crypto::escrow;
//! use manna_crypto::{AesKey, KeyFileWriter, KeyMetadata};
//!
//! let identity = age::x25519::Identity::generate();
//! let recipient = identity.to_public().to_string();
//! let key_file = KeyFileWriter::new()
//!     .primary(&AesKey::generate(), KeyMetadata::default())
//!     .render();
//! let sealed = escrow::seal(&key_file, &[recipient.as_str()]).unwrap();
//! assert!(sealed.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
//!
//! use age::secrecy::ExposeSecret;
//! let identity_file = identity.to_string();
//! let opened = escrow::open(&sealed, identity_file.expose_secret()).unwrap();
//! assert_eq!(*opened, *key_file);
//! ```

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use crate::key_file::parse_key_file;
use crate::source::{KeyFileFormat, KeySourceError};

/// The name key-file errors of escrowed text are reported under.
const ESCROWED: &str = "<escrowed key file>";

/// Why sealing or opening an escrow file failed. No variant carries key
/// material, a plaintext or an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EscrowError {
    /// No recipient was given.
    #[error("no escrow recipient given: pass at least one age public key (age1…)")]
    NoRecipients,
    /// A recipient is not an age X25519 public key.
    #[error("escrow recipient #{index} is not an age X25519 public key (expected `age1…`)")]
    InvalidRecipient {
        /// Its position in the list, from 1.
        index: usize,
    },
    /// The identity text holds no age X25519 identity, or a line that is
    /// not one (the line is not shown).
    #[error(
        "the identity file is not an age identity file: line {line} is not an \
         `AGE-SECRET-KEY-1…` identity, a comment or blank (its content is not shown)"
    )]
    InvalidIdentity {
        /// The offending line, from 1 (0: the file holds no identity).
        line: usize,
    },
    /// The text to seal, or the text recovered, is not a key file that
    /// loads.
    #[error("not a loadable key file: {0}")]
    KeyFile(#[source] KeySourceError),
    /// The escrow file is not an (armored or binary) age file.
    #[error("not an age escrow file (expected `-----BEGIN AGE ENCRYPTED FILE-----`)")]
    NotAnEscrowFile,
    /// None of the identities is a recipient of this escrow file.
    #[error("wrong identity: none of the given identities can open this escrow file")]
    WrongIdentity,
    /// The escrow file is damaged (truncated or altered).
    #[error("the escrow file is damaged or was altered: it cannot be decrypted")]
    Damaged,
}

/// Encrypts `key_file` (TOML key-file text, as [`KeyFileWriter`](crate::KeyFileWriter)
/// renders it or [`FileKeySource`](crate::FileKeySource) reads it) to every
/// recipient (`age1…` X25519 public keys) as an ASCII-armored age file.
/// The text must load as a keyring, so nothing useless is escrowed.
pub fn seal(key_file: &str, recipients: &[&str]) -> Result<Vec<u8>, EscrowError> {
    if recipients.is_empty() {
        return Err(EscrowError::NoRecipients);
    }
    let recipients = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|_| EscrowError::InvalidRecipient { index: i + 1 })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_loads(key_file)?;

    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|_| EscrowError::NoRecipients)?;
    // Writing to memory fails only on a bug; reported without detail.
    let io = |_: std::io::Error| EscrowError::Damaged;
    let armored = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor).map_err(io)?;
    let mut writer = encryptor.wrap_output(armored).map_err(io)?;
    writer.write_all(key_file.as_bytes()).map_err(io)?;
    writer.finish().and_then(|armor| armor.finish()).map_err(io)
}

/// Decrypts an escrow file (armored or binary age) with the X25519
/// identities of `identity_file` (`AGE-SECRET-KEY-1…` lines; `#` comments
/// and blank lines are skipped) and returns the key-file text, after
/// checking it loads.
pub fn open(escrow_file: &[u8], identity_file: &str) -> Result<Zeroizing<String>, EscrowError> {
    let identities = parse_identities(identity_file)?;
    let decryptor = age::Decryptor::new_buffered(ArmoredReader::new(escrow_file))
        .map_err(|_| EscrowError::NotAnEscrowFile)?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => EscrowError::WrongIdentity,
            _ => EscrowError::Damaged,
        })?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(escrow_file.len()));
    reader
        .read_to_end(&mut bytes)
        .map_err(|_| EscrowError::Damaged)?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => {
            let mut out = Zeroizing::new(String::with_capacity(text.len()));
            out.push_str(text);
            out
        }
        Err(_) => {
            return Err(EscrowError::KeyFile(KeySourceError::FileSyntax {
                path: ESCROWED.into(),
                format: "TOML",
                position: "not UTF-8".to_owned(),
            }))
        }
    };
    check_loads(&text)?;
    Ok(text)
}

fn parse_identities(text: &str) -> Result<Vec<age::x25519::Identity>, EscrowError> {
    let mut identities = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = age::x25519::Identity::from_str(line)
            .map_err(|_| EscrowError::InvalidIdentity { line: i + 1 })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(EscrowError::InvalidIdentity { line: 0 });
    }
    Ok(identities)
}

fn check_loads(key_file: &str) -> Result<(), EscrowError> {
    parse_key_file(key_file, KeyFileFormat::Toml, Path::new(ESCROWED))
        .map(drop)
        .map_err(EscrowError::KeyFile)
}
