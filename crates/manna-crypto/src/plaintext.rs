//! Decrypted values, zeroized on drop.

use std::fmt;
use std::ops::Deref;

use zeroize::{Zeroize as _, Zeroizing};

/// A decrypted value. Zeroized on drop (its whole allocation); `Debug` shows
/// only the length and there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    pub(crate) fn new(mut bytes: Zeroizing<Vec<u8>>) -> Self {
        Plaintext(std::mem::take(&mut *bytes))
    }

    /// The plaintext bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as UTF-8 text, if it is.
    pub fn to_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// Takes the bytes out, still in a zeroizing wrapper.
    pub fn into_inner(mut self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(std::mem::take(&mut self.0))
    }
}

impl Drop for Plaintext {
    /// Wipes the bytes and the spare capacity behind them (a decrypted
    /// buffer may keep ciphertext or a moved copy of the plaintext there)
    /// with `zeroize`'s slice wipe: a `memset` the optimiser must keep.
    /// (`Zeroizing<Vec<u8>>` wipes byte by byte with volatile stores, which
    /// costs more than AES-GCM itself on large values.)
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
        self.0.spare_capacity_mut().zeroize();
        self.0.clear();
    }
}

impl Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext(<{} bytes redacted>)", self.0.len())
    }
}
