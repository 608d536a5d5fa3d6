//! The per-value plan: unchanged, re-encrypt, or failed.

use std::borrow::Cow;

use manna_crypto::{inspect, DecryptError, Format, KeyId, Keyring};

use crate::failures::FailureKind;
use crate::options::{AadMode, Target};
use crate::report::ValueClass;
use manna_store::{ColumnRef, Row, Value};

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
    Unchanged(ValueClass),
    /// Decrypts but is not in the target format; `new` is the re-encrypted
    /// value when planning at [`Depth::Rewrite`].
    Pending {
        class: ValueClass,
        new: Option<String>,
    },
    /// Cannot be decrypted (or re-encrypted) with the configured keys.
    Failed {
        class: ValueClass,
        reason: FailureKind,
        error: Option<DecryptError>,
    },
}

/// Every Fernet token starts with these characters (version byte 0x80 and
/// the high bytes of a timestamp before 2106).
pub(crate) const FERNET_PREFIX: &str = "gAAAAA";

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

    /// The primary key's id.
    pub(crate) fn primary(&self) -> KeyId {
        self.primary
    }

    /// The class every value ends in.
    pub(crate) fn target_class(&self) -> ValueClass {
        match self.target {
            Target::Aes256Gcm => ValueClass::Aes256Gcm(self.primary),
            Target::Fernet => match self.keyring.fernet_key_ids().first() {
                Some(id) => ValueClass::Fernet(*id),
                None => ValueClass::Unknown,
            },
        }
    }

    /// The prefix every value in the target format starts with (a value
    /// with it may still be damaged; one without it is surely not done).
    pub(crate) fn target_prefix(&self) -> String {
        match self.target {
            Target::Aes256Gcm => manna_crypto::text_header(self.primary),
            Target::Fernet => FERNET_PREFIX.to_owned(),
        }
    }

    /// Whether a value of class `class` is in the target format.
    pub(crate) fn in_target(&self, class: ValueClass) -> bool {
        match (self.target, class) {
            (Target::Aes256Gcm, ValueClass::Aes256Gcm(key_id)) => key_id == self.primary,
            (Target::Fernet, ValueClass::Fernet(_)) => true,
            _ => false,
        }
    }

    fn failed(class: ValueClass, e: DecryptError) -> Outcome {
        // A Fernet token that no configured key authenticates is under a
        // key we do not have (Fernet has no AAD to get wrong).
        let reason = match (&e, class) {
            (DecryptError::Authentication, ValueClass::Unknown) => FailureKind::UnknownKey,
            _ => FailureKind::of(&e),
        };
        Outcome::Failed {
            class,
            reason,
            error: Some(e),
        }
    }

    /// Plans `row` to `depth`.
    pub(crate) fn plan(&self, row: &Row, depth: Depth) -> Outcome {
        let value = match &row.value {
            Value::Null => return Outcome::Null,
            Value::Text(v) => v.as_str(),
            Value::NotText => {
                return Outcome::Failed {
                    class: ValueClass::Unknown,
                    reason: FailureKind::NotText,
                    error: None,
                }
            }
        };
        let format = inspect(value);
        // Past the keyring's `fernet_until`, Fernet tokens cannot be read.
        let fernet_ended = match format {
            Format::Fernet => self.keyring.check_fernet_not_ended().err(),
            _ => None,
        };
        // Fernet tokens name no key: attribute them unless the value is
        // about to be rewritten anyway (its decryption proves it readable).
        let class = match format {
            Format::Fernet
                if self.target == Target::Fernet
                    || depth != Depth::Rewrite
                    || fernet_ended.is_some() =>
            {
                match self.keyring.fernet_key_of(value) {
                    Some(id) => ValueClass::Fernet(id),
                    None if !self.keyring.has_fernet() => {
                        return Self::failed(ValueClass::Unknown, DecryptError::NoFernetKey)
                    }
                    None => return Self::failed(ValueClass::Unknown, DecryptError::Authentication),
                }
            }
            // Rewritten below: counted in the target format once written.
            Format::Fernet => ValueClass::Unknown,
            Format::Aes256Gcm { key_id } => ValueClass::Aes256Gcm(key_id),
            Format::Plaintext => ValueClass::Plaintext,
            _ => ValueClass::Unknown,
        };
        if let (ValueClass::Fernet(_), Some(e)) = (class, fernet_ended) {
            // Still counted as Fernet under its key (the census stays true),
            // and failed: it cannot be read any more.
            return Self::failed(class, e);
        }
        let in_target = self.in_target(class);
        if in_target && (depth != Depth::Verify || matches!(class, ValueClass::Fernet(_))) {
            // An attributed Fernet token was decrypted to attribute it.
            return Outcome::Unchanged(class);
        }
        if matches!(class, ValueClass::Fernet(_)) && depth != Depth::Rewrite {
            return Outcome::Pending { class, new: None };
        }
        let aad: Cow<'_, [u8]> = match &self.shared_aad {
            Some(shared) => Cow::Borrowed(shared),
            None => Cow::Owned(self.aad.aad(self.column, &row.id)),
        };
        let plain = match self.keyring.decrypt(value, &aad) {
            Ok(p) => p,
            Err(e) => return Self::failed(class, e),
        };
        if in_target {
            return Outcome::Unchanged(class);
        }
        if depth != Depth::Rewrite {
            return Outcome::Pending { class, new: None };
        }
        let encrypted = match self.target {
            Target::Aes256Gcm => self.keyring.encrypt(&plain, &aad),
            Target::Fernet => self.keyring.encrypt_fernet(&plain),
        };
        let Ok(new) = encrypted else {
            return Outcome::Failed {
                class,
                reason: FailureKind::EncryptionFailed,
                error: None,
            };
        };
        // Write safety: the new value must decrypt, under the same binding,
        // to exactly the old plaintext before it may replace the old value.
        match self.keyring.decrypt(&new, &aad) {
            Ok(again) if again.as_bytes() == plain.as_bytes() => {}
            _ => {
                return Outcome::Failed {
                    class,
                    reason: FailureKind::VerificationMismatch,
                    error: None,
                }
            }
        }
        Outcome::Pending {
            class,
            new: Some(new),
        }
    }
}
