//! Proptest strategies for rows of an encrypted column, and the key fixture
//! that turns them into stored values.

use manna_crypto::{AesKey, FernetKey, Keyring};
use proptest::prelude::*;

use crate::options::AadMode;
use manna_store::testing::MemoryStore;
use manna_store::{ColumnRef, IdKind, RowId};

/// What a generated row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueKind {
    /// SQL `NULL`.
    Null,
    /// A Fernet token under [`TestKeys::fernet`].
    Fernet,
    /// An envelope under [`TestKeys::primary`].
    Primary,
    /// An envelope under [`TestKeys::previous`] (decrypt-only).
    Previous,
    /// An envelope under [`TestKeys::unknown`] (not in the keyring).
    UnknownKey,
    /// An envelope under the previous key bound to another column (fails
    /// authentication).
    WrongAad,
    /// Unencrypted text.
    Plaintext,
    /// A damaged token (unknown format).
    Garbage,
}

impl ValueKind {
    /// Every kind.
    pub const ALL: [ValueKind; 8] = [
        ValueKind::Null,
        ValueKind::Fernet,
        ValueKind::Primary,
        ValueKind::Previous,
        ValueKind::UnknownKey,
        ValueKind::WrongAad,
        ValueKind::Plaintext,
        ValueKind::Garbage,
    ];

    /// Whether a keyring from [`TestKeys::keyring`] can decrypt it (`NULL`
    /// counts as fine).
    pub fn decryptable(self) -> bool {
        !matches!(
            self,
            ValueKind::UnknownKey | ValueKind::WrongAad | ValueKind::Garbage
        )
    }
}

/// The keys behind generated rows.
#[derive(Debug)]
pub struct TestKeys {
    /// The primary key of [`TestKeys::keyring`].
    pub primary: AesKey,
    /// A decrypt-only key of [`TestKeys::keyring`].
    pub previous: AesKey,
    /// A key that is not in the keyring.
    pub unknown: AesKey,
    /// The Fernet key of [`TestKeys::keyring`].
    pub fernet: FernetKey,
}

impl TestKeys {
    /// Fresh random keys.
    pub fn generate() -> Self {
        TestKeys {
            primary: AesKey::generate(),
            previous: AesKey::generate(),
            unknown: AesKey::generate(),
            fernet: FernetKey::generate(),
        }
    }

    /// Primary, previous (decrypt-only) and Fernet keys; plaintext accepted.
    pub fn keyring(&self) -> Keyring {
        Keyring::builder()
            .primary(self.primary.clone())
            .previous(self.previous.clone())
            .fernet(self.fernet.clone())
            .accept_plaintext(true)
            .build()
            .expect("a valid test keyring")
    }

    /// A keyring whose primary is `previous` and decrypt-only key is
    /// `primary` (the state before a rotation), with the Fernet key.
    pub fn keyring_before_rotation(&self) -> Keyring {
        Keyring::builder()
            .primary(self.previous.clone())
            .previous(self.primary.clone())
            .fernet(self.fernet.clone())
            .accept_plaintext(true)
            .build()
            .expect("a valid test keyring")
    }

    /// The stored value of `kind` for `secret` with associated data `aad`.
    pub fn encode(&self, kind: ValueKind, secret: &str, aad: &[u8]) -> Option<String> {
        let seal = |key: &AesKey, aad: &[u8]| {
            Keyring::new(key.clone())
                .encrypt(secret.as_bytes(), aad)
                .expect("test encryption")
        };
        Some(match kind {
            ValueKind::Null => return None,
            ValueKind::Fernet => Keyring::builder()
                .primary(self.unknown.clone())
                .fernet(self.fernet.clone())
                .build()
                .expect("a valid test keyring")
                .encrypt_fernet(secret.as_bytes())
                .expect("test encryption"),
            ValueKind::Primary => seal(&self.primary, aad),
            ValueKind::Previous => seal(&self.previous, aad),
            ValueKind::UnknownKey => seal(&self.unknown, aad),
            ValueKind::WrongAad => {
                let mut other = aad.to_vec();
                other.extend_from_slice(b"-elsewhere");
                seal(&self.previous, &other)
            }
            ValueKind::Plaintext => secret.to_owned(),
            ValueKind::Garbage => format!("gAAAAA{secret}"),
        })
    }

    /// Creates `column`'s table in `store` (integer ids, version column) and
    /// fills it with `rows` (ids 1, 2, …) bound with `aad`.
    pub fn seed(
        &self,
        store: &MemoryStore,
        column: &ColumnRef,
        aad: AadMode,
        rows: &[(ValueKind, String)],
    ) {
        store.create_table(column, IdKind::Int, &[], true);
        for (i, (kind, secret)) in rows.iter().enumerate() {
            let id = RowId::Int(i as i64 + 1);
            let value = self.encode(*kind, secret, &aad.aad(column, &id));
            store.insert(column, id, value);
        }
    }
}

/// Any [`ValueKind`].
pub fn value_kind() -> impl Strategy<Value = ValueKind> {
    proptest::sample::select(ValueKind::ALL.to_vec())
}

/// A [`ValueKind`] a [`TestKeys::keyring`] can read.
pub fn readable_kind() -> impl Strategy<Value = ValueKind> {
    proptest::sample::select(
        ValueKind::ALL
            .iter()
            .copied()
            .filter(|k| k.decryptable())
            .collect::<Vec<_>>(),
    )
}

/// A secret as applications store them: 1–48 characters of lowercase
/// letters, digits and `-._ ` (so it never looks like a token).
pub fn secret() -> impl Strategy<Value = String> {
    "[a-z0-9 ._-]{1,48}"
}

/// Up to `max` rows: a kind and a secret each.
pub fn rows(max: usize) -> impl Strategy<Value = Vec<(ValueKind, String)>> {
    proptest::collection::vec((value_kind(), secret()), 0..=max)
}

/// A row id: an integer or a short text key.
pub fn row_id() -> impl Strategy<Value = RowId> {
    prop_oneof![
        any::<i64>().prop_map(RowId::Int),
        "[A-Za-z0-9_-]{1,12}".prop_map(RowId::Text),
    ]
}
