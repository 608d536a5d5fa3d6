//! Key and envelope verbs: `keygen`, `info`, `inspect`, `encrypt`, `decrypt`.
//!
//! Thin wrappers: every decision is made by `manna-crypto`.

use std::io::{Read, Write};

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use manna_crypto::{
    AesKey, EnvKeySource, FileKeySource, KeyRole, KeySource, KeySourceError, Keyring, Status,
    ENV_AES_KEY,
};

/// Where the keys come from: a keyring file (`--key-file` / `MANNA_KEY_FILE`)
/// or the `MANNA_ENCRYPTION_*` environment variables.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyConfig {
    /// Keyring file (TOML or JSON), if given.
    pub(crate) key_file: Option<PathBuf>,
    /// Accept never-encrypted values when decrypting (migrating plaintext
    /// columns). Environment keys only: a key file says `accept_plaintext = true`.
    pub(crate) accept_plaintext: bool,
}

impl KeyConfig {
    fn source(&self) -> Box<dyn KeySource> {
        match &self.key_file {
            // A key file states `accept_plaintext` itself.
            Some(path) => Box::new(FileKeySource::new(path)),
            None => Box::new(EnvKeySource::new().accept_plaintext(self.accept_plaintext)),
        }
    }

    fn origin(&self) -> String {
        match &self.key_file {
            Some(path) => format!("key file {}", show(path)),
            None => "the environment".to_owned(),
        }
    }

    /// Loads the keyring, with a message that says where from.
    pub(crate) fn load(&self) -> Result<Keyring> {
        if let Some(path) = &self.key_file {
            if let Some(warning) = FileKeySource::new(path).permission_warning() {
                eprintln!("warning: {warning}");
            }
        }
        let keyring = self
            .source()
            .load()
            .with_context(|| format!("cannot load encryption keys from {}", self.origin()))?;
        manna_crypto::audit::keyring_loaded(&keyring, &self.origin());
        Ok(keyring)
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// `keygen`: one new base64 AES-256 key on stdout.
pub(crate) fn keygen() -> Result<()> {
    let key = AesKey::generate();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.to_base64().as_str())?;
    Ok(())
}

/// `info [--json]`: the keyring's status, without any key material.
pub(crate) fn info(keys: &KeyConfig, json: bool) -> Result<()> {
    let status = match keys.source().load() {
        Ok(keyring) => keyring.status(),
        // Not configured is a state worth reporting, not a failure of `info`;
        // a malformed key is a failure.
        Err(KeySourceError::MissingVariable {
            variable: ENV_AES_KEY,
        }) => {
            let mut status = Status::uninitialized();
            for warning in &mut status.warnings {
                if warning.starts_with("no primary AES-256 key configured") {
                    *warning = format!(
                        "{warning}: set {ENV_AES_KEY} (`{} keygen` prints a new key)",
                        crate::program()
                    );
                }
            }
            status
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot load encryption keys from {}", keys.origin()))
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
    } else {
        write_status(&mut out, &status)?;
    }
    Ok(())
}

fn write_status(out: &mut impl Write, s: &Status) -> std::io::Result<()> {
    let ids = manna_crypto::KeyId::list;
    writeln!(out, "initialized:        {}", s.initialized)?;
    writeln!(
        out,
        "algorithm:          {} (envelope v{})",
        s.algorithm, s.format_version
    )?;
    match s.primary_key_id {
        Some(id) => writeln!(out, "primary key:        {id}")?,
        None => writeln!(out, "primary key:        none")?,
    }
    writeln!(out, "decrypt-only keys:  {}", ids(&s.decrypt_only_key_ids))?;
    let fernet = match (s.fernet_fallback, s.fernet_until) {
        (true, Some(until)) => format!("on until {}", rfc3339(until)),
        (true, None) => "on".to_owned(),
        (false, Some(until)) if !s.fernet_key_ids.is_empty() => {
            format!("off: ended at {} (fernet_until)", rfc3339(until))
        }
        (false, _) => "off".to_owned(),
    };
    writeln!(
        out,
        "fernet fallback:    {fernet} ({})",
        ids(&s.fernet_key_ids)
    )?;
    writeln!(out, "accept plaintext:   {}", s.accept_plaintext)?;
    writeln!(
        out,
        "nonce budget:       warn at {} encryptions per key, refuse at {}",
        s.nonce_warning_threshold, s.nonce_limit
    )?;
    for k in &s.keys {
        let role = match k.role {
            KeyRole::Primary => "primary",
            KeyRole::DecryptOnly => "decrypt-only",
            KeyRole::Fernet => "fernet",
            _ => "other",
        };
        let age = k
            .age_days
            .map_or_else(|| "age unknown".to_owned(), |d| format!("{d} days old"));
        writeln!(
            out,
            "  key {} {role:<12} {} encryptions by this process, {age}",
            k.key_id, k.encryptions
        )?;
    }
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Prints on stderr, as `warning:` lines, what the keyring accepts besides
/// its AES envelopes (Fernet fallback, plaintext): commands that read
/// stored values say so before they start.
pub(crate) fn warn_acceptance(keyring: &Keyring) {
    for w in keyring.status().acceptance_warnings() {
        eprintln!("warning: {w}");
    }
}

/// `inspect TOKEN`: the format of a stored value, without decrypting it.
pub(crate) fn inspect(token: &str) -> Result<()> {
    // The value exactly as given: whitespace around a stored value is part
    // of it (docs/format.md §4).
    let format = manna_crypto::inspect(token);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{format}")?;
    Ok(())
}

/// `encrypt [--aad TEXT]`: raw bytes on stdin, one token on stdout.
pub(crate) fn encrypt(keys: &KeyConfig, aad: Option<&str>) -> Result<()> {
    let keyring = keys.load()?;
    let mut plaintext = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .read_to_end(&mut plaintext)
        .context("cannot read stdin")?;
    let token = keyring.encrypt(&plaintext, aad.unwrap_or_default().as_bytes())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}")?;
    Ok(())
}

/// `decrypt [--aad TEXT]`: one token on stdin, raw bytes on stdout.
pub(crate) fn decrypt(keys: &KeyConfig, aad: Option<&str>) -> Result<()> {
    let keyring = keys.load()?;
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_to_string(&mut input)
        .context("cannot read stdin: expected one token as text")?;
    // The ASCII whitespace around the token (echo's newline), no more.
    let token = input.trim_ascii();
    if token.is_empty() {
        bail!("no token on stdin: pipe in one stored value");
    }
    let format = manna_crypto::inspect(token);
    if aad.is_some() && format == manna_crypto::Format::Fernet {
        eprintln!("warning: a Fernet token binds no AAD: --aad was not checked");
    }
    let plaintext = keyring
        .decrypt(token, aad.unwrap_or_default().as_bytes())
        .map_err(|e| match (e, format) {
            // Fernet binds no AAD: the key is what is missing, not the AAD.
            (manna_crypto::DecryptError::Authentication, manna_crypto::Format::Fernet) => {
                anyhow::Error::new(crate::hints::FernetUnopened)
            }
            (e, _) => e.into(),
        })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&plaintext)?;
    out.flush()?;
    Ok(())
}

/// `keys escrow`: the keyring's key file (every key, with its metadata),
/// encrypted to the escrow recipients, on stdout or in `out`.
pub(crate) fn escrow(keys: &KeyConfig, recipients: &[String], out: Option<&Path>) -> Result<()> {
    let text = match &keys.key_file {
        Some(path) => {
            keys.load()?;
            zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read key file {}", show(path)))?,
            )
        }
        None => EnvKeySource::new()
            .key_file()
            .context("cannot load encryption keys from the environment")?,
    };
    let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let sealed = manna_crypto::escrow::seal(&text, &recipients)?;
    match out {
        Some(path) => {
            std::fs::write(path, &sealed).with_context(|| format!("cannot write {}", show(path)))?
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&sealed)?;
            stdout.flush()?;
        }
    }
    eprintln!(
        "escrowed {} to {} recipient(s); keep it where the recipients' identities are not",
        keys.origin(),
        recipients.len()
    );
    Ok(())
}

/// `keys escrow-open`: the key file recovered from an escrow file, written
/// to `out` (mode 0600), never to the terminal.
pub(crate) fn escrow_open(identity: &Path, file: Option<&Path>, out: &Path) -> Result<()> {
    let identity_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(identity)
            .with_context(|| format!("cannot read identity file {}", show(identity)))?,
    );
    let sealed = match file {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", show(path)))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .context("cannot read the escrow file from stdin")?;
            buf
        }
    };
    let key_file = manna_crypto::escrow::open(&sealed, &identity_text)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", show(out)))?;
    f.write_all(key_file.as_bytes())?;
    f.flush()?;
    eprintln!("recovered key file written to {} (mode 0600)", show(out));
    Ok(())
}
