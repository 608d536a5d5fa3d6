//! Decrypted values, zeroized on drop.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroizing;

/// A decrypted value. Zeroized on drop; `Debug` shows only the length and
/// there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Plaintext(bytes)
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
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
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
