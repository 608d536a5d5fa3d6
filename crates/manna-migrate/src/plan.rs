//! The per-value plan: unchanged, re-encrypt, or failed.

use std::borrow::Cow;

use manna_crypto::{inspect, DecryptError, Format, KeyId, Keyring};

use crate::options::{AadMode, Target};
use crate::store::{ColumnRef, Row};

/// How far planning goes for one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Decrypt values not in the target format (dry-run, census checks).
    Classify,
    /// Decrypt every value, in the target format or not (verify-only).
    Verify,
    /// Decrypt values not in the target format, encrypt them for the target
    /// and check the new value decrypts to the same plaintext (migrate).
    Rewrite,
}

/// What to do with one value.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// SQL `NULL`: nothing to do.
    Null,
    /// Already in the target format.
    Unchanged(Format),
    /// Decrypts but is not in the target format; `new` is the re-encrypted
    /// value when planning at [`Depth::Rewrite`].
    Pending { new: Option<String> },
    /// Cannot be decrypted (or re-encrypted) with the configured keys.
    Failed {
        format: Format,
        reason: &'static str,
        error: Option<DecryptError>,
    },
}

/// Label of a new value that did not decrypt back to the old plaintext.
pub(crate) const VERIFICATION_MISMATCH: &str = "verification_mismatch";
/// Label of a value that could not be encrypted for the target.
pub(crate) const ENCRYPTION_FAILED: &str = "encryption_failed";

/// Plans values of one column.
pub(crate) struct Planner<'a> {
    keyring: &'a Keyring,
    target: Target,
    aad: AadMode,
    /// The AAD shared by every row (column and none modes), computed once;
    /// `None` in row mode, where each row has its own.
    shared_aad: Option<Vec<u8>>,
    column: &'a ColumnRef,
    primary: KeyId,
}

impl<'a> Planner<'a> {
    pub(crate) fn new(
        keyring: &'a Keyring,
        target: Target,
        aad: AadMode,
        column: &'a ColumnRef,
    ) -> Self {
        Planner {
            keyring,
            target,
            aad,
            shared_aad: aad.shared(column),
            column,
            primary: keyring.primary_key_id(),
        }
    }

    /// The format every value ends in.
    pub(crate) fn target_format(&self) -> Format {
        match self.target {
            Target::Aes256Gcm => Format::Aes256Gcm {
                key_id: self.primary,
            },
            Target::Fernet => Format::Fernet,
        }
    }

    /// Whether a value of `format` is already in the target format.
    pub(crate) fn in_target(&self, format: Format) -> bool {
        match (self.target, format) {
            (Target::Aes256Gcm, Format::Aes256Gcm { key_id }) => key_id == self.primary,
            (Target::Fernet, Format::Fernet) => true,
            _ => false,
        }
    }

    /// Plans `row` to `depth`.
    pub(crate) fn plan(&self, row: &Row, depth: Depth) -> Outcome {
        let Some(value) = row.value.as_deref() else {
            return Outcome::Null;
        };
        let format = inspect(value);
        let in_target = self.in_target(format);
        if in_target && depth != Depth::Verify {
            return Outcome::Unchanged(format);
        }
        let aad: Cow<'_, [u8]> = match &self.shared_aad {
            Some(shared) => Cow::Borrowed(shared),
            None => Cow::Owned(self.aad.aad(self.column, &row.id)),
        };
        let plain = match self.keyring.decrypt(value, &aad) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    format,
                    reason: e.kind(),
                    error: Some(e),
                }
            }
        };
        if in_target {
            return Outcome::Unchanged(format);
        }
        if depth != Depth::Rewrite {
            return Outcome::Pending { new: None };
        }
        let encrypted = match self.target {
            Target::Aes256Gcm => self.keyring.encrypt(&plain, &aad),
            Target::Fernet => self.keyring.encrypt_fernet(&plain),
        };
        let Ok(new) = encrypted else {
            return Outcome::Failed {
                format,
                reason: ENCRYPTION_FAILED,
                error: None,
            };
        };
        // Write safety: the new value must decrypt, under the same binding,
        // to exactly the old plaintext before it may replace the old value.
        match self.keyring.decrypt(&new, &aad) {
            Ok(again) if again.as_bytes() == plain.as_bytes() => {}
            _ => {
                return Outcome::Failed {
                    format,
                    reason: VERIFICATION_MISMATCH,
                    error: None,
                }
            }
        }
        Outcome::Pending { new: Some(new) }
    }
}
