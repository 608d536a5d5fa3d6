#![doc = include_str!("../README.md")]
//!
//! ## The Rust side
//!
//! This crate is the native half of the Python package: the extension module
//! `manna._native`, which the pure-Python `manna` package (in `python/manna`)
//! re-exports. Every decision is made by [`manna_crypto`]; this crate only
//! converts arguments and errors.

use manna_crypto::{
    AesKey, CryptoError, DecryptError, EnvKeySource, FernetKey, FileKeySource, KeyError, KeySource,
    KeySourceError, Keyring as RustKeyring, Plaintext, Status, ENV_AES_KEY,
};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use zeroize::Zeroizing;

mod lock;

pyo3::create_exception!(
    manna,
    MannaError,
    PyException,
    "Base class of every error raised by manna. Messages never contain a key or a plaintext."
);
pyo3::create_exception!(
    manna,
    KeyConfigError,
    MannaError,
    "The keys are missing, malformed, or do not form a valid keyring (environment, key file or explicit keys)."
);
pyo3::create_exception!(
    manna,
    EncryptionError,
    MannaError,
    "Encryption was refused (nonce budget exhausted, primary key expired, no Fernet key, ...)."
);
pyo3::create_exception!(
    manna,
    DecryptionError,
    MannaError,
    "Decryption failed. `kind` is a short data-free name: `authentication`, `unknown_key`, `unknown_format`, ..."
);

fn key_config_error(err: impl std::fmt::Display) -> PyErr {
    KeyConfigError::new_err(err.to_string())
}

fn encryption_error(err: CryptoError) -> PyErr {
    EncryptionError::new_err(err.to_string())
}

fn decryption_error(py: Python<'_>, err: DecryptError) -> PyErr {
    let py_err = DecryptionError::new_err(err.to_string());
    // `kind` is a fixed identifier, never data.
    let _ = py_err.value(py).setattr("kind", err.kind());
    py_err
}

/// Text (UTF-8) or bytes, copied into a buffer that is wiped on drop.
fn secret_bytes(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Zeroizing<Vec<u8>>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Zeroizing::new(bytes.as_bytes().to_vec()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        let text = Zeroizing::new(text.to_cow()?.into_owned());
        return Ok(Zeroizing::new(text.as_bytes().to_vec()));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "{what} must be str or bytes"
    )))
}

/// The caller's AAD: `None` is empty, `str` is its UTF-8 bytes, `bytes` as is.
fn aad_bytes(aad: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    match aad {
        None => Ok(Vec::new()),
        Some(value) if value.is_none() => Ok(Vec::new()),
        Some(value) => {
            if let Ok(bytes) = value.cast::<PyBytes>() {
                Ok(bytes.as_bytes().to_vec())
            } else if let Ok(text) = value.cast::<PyString>() {
                Ok(text.to_cow()?.as_bytes().to_vec())
            } else {
                Err(pyo3::exceptions::PyTypeError::new_err(
                    "aad must be None, str or bytes",
                ))
            }
        }
    }
}

/// A token: `str`, or ASCII `bytes`. Tokens are not secret.
fn token_text(token: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = token.cast::<PyString>() {
        return Ok(text.to_cow()?.into_owned());
    }
    if let Ok(bytes) = token.cast::<PyBytes>() {
        // Not UTF-8 cannot be a token: let the keyring call it unknown.
        return Ok(String::from_utf8_lossy(bytes.as_bytes()).into_owned());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(
        "token must be str or bytes",
    ))
}

/// A keyring: one primary AES-256 key that encrypts, decrypt-only previous
/// keys, legacy Fernet keys (read in order) — `manna_crypto::Keyring`.
///
/// `repr()` shows key ids only. Keys are wiped from memory when the last
/// reference is dropped.
#[pyclass(module = "manna", name = "Keyring", frozen)]
struct Keyring {
    inner: RustKeyring,
}

impl Keyring {
    fn decrypt_plaintext(
        &self,
        py: Python<'_>,
        token: &Bound<'_, PyAny>,
        aad: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Plaintext> {
        let aad = aad_bytes(aad)?;
        // Bytes as they are (a binary envelope, or non-UTF-8 bytes the
        // keyring calls unknown), never through a lossy text conversion.
        let result = match token.cast::<PyBytes>() {
            Ok(bytes) => self.inner.decrypt_bytes(bytes.as_bytes(), &aad),
            Err(_) => self.inner.decrypt(&token_text(token)?, &aad),
        };
        result.map_err(|e| decryption_error(py, e))
    }
}

#[pymethods]
impl Keyring {
    /// Builds a keyring from explicit base64 keys: `primary` (AES-256),
    /// `previous` (decrypt-only AES-256 keys), `fernet` (legacy keys, first
    /// one first, as `MultiFernet`).
    #[new]
    #[pyo3(signature = (primary, previous = Vec::new(), fernet = Vec::new(), accept_plaintext = false))]
    fn new(
        primary: &Bound<'_, PyAny>,
        previous: Vec<Bound<'_, PyAny>>,
        fernet: Vec<Bound<'_, PyAny>>,
        accept_plaintext: bool,
    ) -> PyResult<Self> {
        let text = |v: &Bound<'_, PyAny>| -> PyResult<Zeroizing<String>> {
            let bytes = secret_bytes(v, "a key")?;
            Ok(Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()))
        };
        let primary = AesKey::from_base64(&text(primary)?).map_err(key_config_error)?;
        let previous = previous
            .iter()
            .map(|k| AesKey::from_base64(&text(k)?).map_err(key_config_error))
            .collect::<PyResult<Vec<_>>>()?;
        let fernet = fernet
            .iter()
            .map(|k| FernetKey::from_base64(&text(k)?).map_err(key_config_error))
            .collect::<PyResult<Vec<_>>>()?;
        let inner = RustKeyring::builder()
            .primary(primary)
            .previous_keys(previous)
            .fernet_keys(fernet)
            .accept_plaintext(accept_plaintext)
            .build()
            .map_err(|e: KeyError| key_config_error(e))?;
        Ok(Keyring { inner })
    }

    /// Loads the keyring from `MANNA_ENCRYPTION_KEY_AES256`,
    /// `MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS`, `MANNA_ENCRYPTION_KEY` and
    /// `MANNA_ENCRYPTION_FERNET_UNTIL`, as the Rust services do.
    #[staticmethod]
    #[pyo3(signature = (accept_plaintext = false))]
    fn from_env(accept_plaintext: bool) -> PyResult<Self> {
        let inner = EnvKeySource::new()
            .accept_plaintext(accept_plaintext)
            .load()
            .map_err(key_config_error)?;
        Ok(Keyring { inner })
    }

    /// Loads the keyring from a key file (TOML, or JSON by extension).
    #[staticmethod]
    fn from_file(path: std::path::PathBuf) -> PyResult<Self> {
        let inner = FileKeySource::new(path).load().map_err(key_config_error)?;
        Ok(Keyring { inner })
    }

    /// Encrypts `plaintext` (str as UTF-8, or bytes) under the primary key,
    /// bound to `aad` (None: empty; str: UTF-8; bytes). Returns an
    /// `mn1:<key id>:…` token.
    #[pyo3(signature = (plaintext, aad = None))]
    fn encrypt(
        &self,
        plaintext: &Bound<'_, PyAny>,
        aad: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let plaintext = secret_bytes(plaintext, "plaintext")?;
        let aad = aad_bytes(aad)?;
        self.inner
            .encrypt(&plaintext, &aad)
            .map_err(encryption_error)
    }

    /// Decrypts a token (an envelope under any configured AES key, or a
    /// legacy Fernet token) and returns the plaintext as str (UTF-8).
    #[pyo3(signature = (token, aad = None))]
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        token: &Bound<'py, PyAny>,
        aad: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyString>> {
        let plaintext = self.decrypt_plaintext(py, token, aad)?;
        let text = plaintext.to_str().map_err(|_| {
            let err = DecryptionError::new_err(
                "the decrypted value is not UTF-8 text: use decrypt_bytes",
            );
            let _ = err.value(py).setattr("kind", "not_utf8");
            err
        })?;
        Ok(PyString::new(py, text))
    }

    /// Like `decrypt`, returning the plaintext as bytes.
    #[pyo3(signature = (token, aad = None))]
    fn decrypt_bytes<'py>(
        &self,
        py: Python<'py>,
        token: &Bound<'py, PyAny>,
        aad: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let plaintext = self.decrypt_plaintext(py, token, aad)?;
        Ok(PyBytes::new(py, plaintext.as_bytes()))
    }

    /// Whether the value is not under the primary key (Fernet, a previous
    /// AES key, or plaintext) and should be re-encrypted.
    fn needs_reencryption(&self, token: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.needs_reencryption(&token_text(token)?))
    }

    /// The primary key's id (16 hex digits).
    #[getter]
    fn primary_key_id(&self) -> String {
        self.inner.primary_key_id().to_string()
    }

    /// Ids of the decrypt-only AES keys.
    #[getter]
    fn decrypt_only_key_ids(&self) -> Vec<String> {
        ids(&self.inner.decrypt_only_key_ids())
    }

    /// Fingerprint ids of the Fernet keys, in order.
    #[getter]
    fn fernet_key_ids(&self) -> Vec<String> {
        ids(&self.inner.fernet_key_ids())
    }

    /// The status as a dict with the fields of `info --json`
    /// (`manna_crypto::Status`): key ids, never keys.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        status_dict(py, &self.inner.status())
    }

    fn __repr__(&self) -> String {
        format!(
            "Keyring(primary={:?}, decrypt_only={:?}, fernet={:?})",
            self.inner.primary_key_id().to_string(),
            ids(&self.inner.decrypt_only_key_ids()),
            ids(&self.inner.fernet_key_ids()),
        )
    }
}

fn ids(ids: &[manna_crypto::KeyId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// `Status` as a Python dict, through its JSON form (the same serializer as
/// `info --json`).
fn status_dict<'py>(py: Python<'py>, status: &Status) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_string(status).map_err(|e| MannaError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (json,))
}

/// The status of the keyring in the environment, as `info --json` prints
/// it: not configured is reported (`initialized: false`), a malformed key
/// raises `KeyConfigError`.
#[pyfunction]
fn env_info(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    match EnvKeySource::new().load() {
        Ok(keyring) => status_dict(py, &keyring.status()),
        Err(KeySourceError::MissingVariable {
            variable: ENV_AES_KEY,
        }) => status_dict(py, &Status::uninitialized()),
        Err(err) => Err(key_config_error(err)),
    }
}

/// A new random AES-256 key, as padded standard base64.
#[pyfunction]
fn generate_key() -> String {
    AesKey::generate().to_base64().to_string()
}

/// A new random legacy Fernet key (url-safe base64), for tests and
/// rollback set-ups.
#[pyfunction]
fn generate_fernet_key() -> String {
    FernetKey::generate().to_base64().to_string()
}

/// The format of a stored value without decrypting it:
/// `"aes256gcm(<key id>)"`, `"fernet"`, `"plaintext"` or `"unknown"`.
#[pyfunction]
fn inspect(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(manna_crypto::inspect_bytes(bytes.as_bytes()).to_string());
    }
    Ok(manna_crypto::inspect(&token_text(value)?).to_string())
}

/// The AAD manna binds a column's values to: `TABLE.COLUMN`
/// (`manna_crypto::aad::column`).
#[pyfunction]
fn column_aad(table: &str, column: &str) -> String {
    manna_crypto::aad::column(table, column)
}

/// The native module, `manna._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("MannaError", py.get_type::<MannaError>())?;
    m.add("KeyConfigError", py.get_type::<KeyConfigError>())?;
    m.add("EncryptionError", py.get_type::<EncryptionError>())?;
    m.add("DecryptionError", py.get_type::<DecryptionError>())?;
    m.add(
        "DistributedLockError",
        py.get_type::<lock::DistributedLockError>(),
    )?;
    m.add("LockTimeoutError", py.get_type::<lock::LockTimeoutError>())?;
    m.add_class::<Keyring>()?;
    m.add_class::<lock::Lock>()?;
    m.add_function(wrap_pyfunction!(lock::lock_resource, m)?)?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(generate_fernet_key, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(column_aad, m)?)?;
    m.add_function(wrap_pyfunction!(env_info, m)?)?;
    Ok(())
}
