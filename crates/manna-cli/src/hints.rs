//! What to do about an error, in this CLI's terms. The libraries' messages
//! state facts (no key configured, key X unknown); which environment
//! variable, key-file entry or command fixes it is the CLI's to say, since
//! only the CLI knows where its keys came from.

use manna_crypto::{
    CryptoError, DecryptError, KeyError, KeySourceError, ENV_AES_KEY, ENV_AES_PREVIOUS,
    ENV_FERNET_KEYS,
};
use manna_migrate::{FailureKind, MigrateError, PreflightError};

/// Where the keyring came from, which decides the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    /// The `MANNA_ENCRYPTION_*` variables.
    Environment,
    /// A key file (`--key-file` / `MANNA_KEY_FILE`).
    File,
}

/// The advice for `err`, if the CLI has one: the first cause in the chain
/// it knows how to fix.
pub(crate) fn hint(err: &anyhow::Error, origin: KeyOrigin) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<KeySourceError>() {
            return key_source(e, origin);
        }
        if let Some(e) = cause.downcast_ref::<KeyError>() {
            return key(e, origin);
        }
        if let Some(e) = cause.downcast_ref::<CryptoError>() {
            return crypto(e, origin);
        }
        if let Some(e) = cause.downcast_ref::<DecryptError>() {
            return decrypt(e, origin);
        }
        if let Some(e) = cause.downcast_ref::<MigrateError>() {
            return migrate(e, origin);
        }
        if cause.downcast_ref::<FernetUnopened>().is_some() {
            return Some(unknown_fernet_key(origin));
        }
        None
    })
}

fn keygen() -> String {
    format!("`{} keygen` prints a new one", crate::program())
}

fn key_source(e: &KeySourceError, origin: KeyOrigin) -> Option<String> {
    match e {
        KeySourceError::MissingVariable { variable } if *variable == ENV_AES_KEY => Some(format!(
            "generate a key with `{} keygen` and export it",
            crate::program()
        )),
        KeySourceError::InvalidKey { reason, .. } => key(reason, origin),
        KeySourceError::Keyring(reason) => key(reason, origin),
        _ => None,
    }
}

fn key(e: &KeyError, origin: KeyOrigin) -> Option<String> {
    match (e, origin) {
        (KeyError::WrongLength { .. } | KeyError::Empty { .. }, _) => Some(keygen()),
        (KeyError::NoPrimaryKey, KeyOrigin::Environment) => {
            Some(format!("set {ENV_AES_KEY} ({})", keygen()))
        }
        (KeyError::NoPrimaryKey, KeyOrigin::File) => {
            Some(format!("add a primary key to the key file ({})", keygen()))
        }
        (KeyError::AesKeyUsedAsFernetKey { .. }, KeyOrigin::Environment) => Some(format!(
            "the legacy Fernet key belongs in {ENV_FERNET_KEYS}, a new AES key (`{} keygen`) in \
             {ENV_AES_KEY}",
            crate::program()
        )),
        _ => None,
    }
}

fn no_fernet_key(origin: KeyOrigin) -> String {
    match origin {
        KeyOrigin::Environment => format!("set {ENV_FERNET_KEYS} to the legacy Fernet key(s)"),
        KeyOrigin::File => "add the legacy Fernet key(s) to the key file".to_owned(),
    }
}

/// A Fernet token that no configured Fernet key opens (the keyring's
/// opaque authentication error, said the way it applies to Fernet).
#[derive(Debug, thiserror::Error)]
#[error("the Fernet token does not open under any configured Fernet key (made with another key, or modified)")]
pub(crate) struct FernetUnopened;

/// What to do about a Fernet token no configured Fernet key opens.
pub(crate) fn unknown_fernet_key(origin: KeyOrigin) -> String {
    match origin {
        KeyOrigin::Environment => format!(
            "no configured Fernet key opens it: if the application rotated its Fernet keys, put \
             the newer key first in {ENV_FERNET_KEYS} (comma-separated, newest first, as \
             MultiFernet)"
        ),
        KeyOrigin::File => "no configured Fernet key opens it: if the application rotated its \
             Fernet keys, add the newer one to the key file"
            .to_owned(),
    }
}

fn crypto(e: &CryptoError, origin: KeyOrigin) -> Option<String> {
    match e {
        CryptoError::NoFernetKey => Some(no_fernet_key(origin)),
        _ => None,
    }
}

fn decrypt(e: &DecryptError, origin: KeyOrigin) -> Option<String> {
    match (e, origin) {
        (DecryptError::NoFernetKey, _) => Some(no_fernet_key(origin)),
        (DecryptError::PlaintextNotAccepted, KeyOrigin::Environment) => {
            Some("`migrate --accept-plaintext` moves a column that was never encrypted".to_owned())
        }
        (DecryptError::PlaintextNotAccepted, KeyOrigin::File) => Some(
            "set `accept_plaintext = true` in the key file, only to migrate a column that was \
             never encrypted"
                .to_owned(),
        ),
        (DecryptError::UnknownKey { .. }, KeyOrigin::Environment) => Some(format!(
            "if it is an older key of yours, add it to {ENV_AES_PREVIOUS}"
        )),
        (DecryptError::UnknownKey { .. }, KeyOrigin::File) => Some(
            "if it is an older key of yours, add it to the key file as decrypt-only".to_owned(),
        ),
        _ => None,
    }
}

fn migrate(e: &MigrateError, origin: KeyOrigin) -> Option<String> {
    match e {
        MigrateError::Keys(e) => crypto(e, origin),
        MigrateError::Preflight(problems) => problems.iter().find_map(|p| match p {
            PreflightError::NoFernetKey => Some(format!("--to fernet: {}", no_fernet_key(origin))),
            // Fernet binds no AAD: the --aad mode is not the suspect.
            PreflightError::Undecryptable {
                kind: FailureKind::UnknownKey,
                cause: Some(DecryptError::Authentication),
                ..
            } => Some(unknown_fernet_key(origin)),
            PreflightError::Undecryptable {
                cause: Some(cause @ DecryptError::PlaintextNotAccepted),
                ..
            } => decrypt(cause, origin),
            PreflightError::Undecryptable {
                cause: Some(cause), ..
            } => decrypt(cause, origin).map(|h| format!("{h}; check the --aad mode too")),
            _ => None,
        }),
        _ => None,
    }
}
