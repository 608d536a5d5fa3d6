//! Encrypted column types: AES-256-GCM on write, transparent reading of
//! legacy Fernet and older AES keys, AAD bound to the column at compile time.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, ToSql};
use diesel::sql_types::{Binary, Text};
use manna_crypto::{audit, DecryptError, KeySource, Keyring, Plaintext};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::versioned::Value;

/// The process-wide keyring of [`Encrypted`] columns. Readers take a
/// snapshot (an `Arc`), so a replacement never changes the keys under a
/// value being encrypted or decrypted.
static DEFAULT_KEYRING: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

fn current() -> Option<Arc<Keyring>> {
    DEFAULT_KEYRING
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Installs the process-wide keyring used by [`Encrypted`] columns, once, at
/// start-up (like rustls' `CryptoProvider::install_default`).
///
/// There is no implicit default: until this is called, reading or writing an
/// [`Encrypted`] value fails with [`Error::NoDefaultKeyring`]. A second call
/// fails with [`Error::KeyringAlreadyInstalled`] and leaves the first keyring
/// in place: rotate keys with [`reload_default_keyring`] or
/// [`replace_default_keyring`]. Code that must not rely on process state
/// uses [`Sealed`] with an explicit keyring instead. Logs an audit event
/// ([`manna_crypto::audit`]).
pub fn install_default_keyring(keyring: Keyring) -> Result<(), Error> {
    let mut slot = DEFAULT_KEYRING
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if slot.is_some() {
        return Err(Error::KeyringAlreadyInstalled);
    }
    audit::keyring_loaded(&keyring, "installed as the default keyring");
    *slot = Some(Arc::new(keyring));
    Ok(())
}

/// Replaces the installed default keyring while the process runs — key
/// rotation without a restart. Every read and write that starts afterwards
/// uses `keyring`; those in flight finish with the keys they started with.
/// Encryptions counted under keys both keyrings share carry over, so the
/// per-key nonce budget stays true. Logs audit events (keyring loaded, and
/// primary changed when it did).
///
/// Fails with [`Error::NoDefaultKeyring`] when none was installed (install
/// the first one with [`install_default_keyring`]).
///
/// ```
/// use manna_crypto::{AesKey, Keyring};
/// use manna_store_diesel::{default_keyring, install_default_keyring, replace_default_keyring};
/// let old = AesKey::generate();
/// install_default_keyring(Keyring::new(old.clone())).unwrap();
/// // ... later, on SIGHUP or a timer: the new primary, the old one kept to decrypt.
/// let rotated = Keyring::builder().primary(AesKey::generate()).previous(old).build().unwrap();
/// let new_id = rotated.primary_key_id();
/// replace_default_keyring(rotated).unwrap();
/// assert_eq!(default_keyring().unwrap().primary_key_id(), new_id);
/// ```
pub fn replace_default_keyring(keyring: Keyring) -> Result<(), Error> {
    let mut slot = DEFAULT_KEYRING
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(old) = slot.as_ref() else {
        return Err(Error::NoDefaultKeyring);
    };
    for key in old.status().keys {
        if key.encryptions > 0 {
            keyring.record_external_encryptions(key.key_id, key.encryptions);
        }
    }
    audit::keyring_loaded(&keyring, "replacing the default keyring");
    if old.primary_key_id() != keyring.primary_key_id() {
        audit::primary_changed(old, &keyring);
    }
    *slot = Some(Arc::new(keyring));
    Ok(())
}

/// Loads a keyring from `source` (the key file or the environment, as at
/// start-up) and [replaces](replace_default_keyring) the default keyring
/// with it. On error the installed keyring stays in place.
pub fn reload_default_keyring(source: &dyn KeySource) -> Result<(), Error> {
    let keyring = source.load().map_err(|e| Error::KeyReload {
        reason: e.to_string(),
    })?;
    replace_default_keyring(keyring)
}

/// The installed default keyring, if any.
pub fn default_keyring() -> Option<Arc<Keyring>> {
    current()
}

fn installed() -> Result<Arc<Keyring>, Error> {
    current().ok_or(Error::NoDefaultKeyring)
}

/// Names the column an encrypted value belongs to. Its [`AAD`](Self::AAD)
/// (`TABLE.COLUMN`, the **SQL** names) is authenticated with every value, so
/// a ciphertext copied into another column does not decrypt.
///
/// Declare implementations with [`encrypted_column!`](crate::encrypted_column):
/// it builds the AAD from validated SQL identifiers, exactly as the migrator
/// and the CLI do (`manna_store::ColumnRef::aad`), so one column
/// has one AAD whoever writes it.
pub trait EncryptedColumn: Send + Sync + 'static {
    /// `TABLE.COLUMN` with the SQL names, the additional authenticated data
    /// of the column.
    const AAD: &'static str;

    /// Whether the column reads legacy Fernet tokens (while the keyring has
    /// Fernet keys). `true` by default, as every column did before; a column
    /// declared with `fernet = false` ([`encrypted_column!`](crate::encrypted_column))
    /// never accepts a Fernet token: reading one fails with the opaque
    /// [`DecryptError::Authentication`], whatever keys the keyring has.
    /// Fernet tokens carry no AAD, so this is how a column that never held
    /// Fernet values refuses one copied from another column, row or backup
    /// (docs/format.md, "The Fernet downgrade").
    const ACCEPTS_FERNET: bool = true;

    /// The row-bound AAD `TABLE.COLUMN:ID` (the migrator's `--aad row`).
    fn row_aad(id: impl fmt::Display) -> String {
        manna_crypto::aad::row(Self::AAD, id)
    }
}

/// Declares a marker type binding encrypted values to one column.
///
/// The AAD is always `TABLE.COLUMN` with the names **as SQL spells them**:
/// the names the migrator and the CLI (`--column TABLE.COLUMN`) use. With a
/// Diesel column path, they are read from the `table!` declaration, so
/// `#[sql_name]` is honoured (and the compiler checks that the column
/// exists):
///
/// ```
/// diesel::table! {
///     #[sql_name = "plaid_items"]
///     items (id) {
///         id -> BigInt,
///         #[sql_name = "access_token"]
///         token -> Text,
///     }
/// }
/// manna_store_diesel::encrypted_column!(
///     /// Plaid access tokens.
///     pub PlaidAccessToken => items::token
/// );
/// use manna_store_diesel::EncryptedColumn;
/// assert_eq!(PlaidAccessToken::AAD, "plaid_items.access_token"); // not `items.token`
/// assert_eq!(PlaidAccessToken::row_aad(7), "plaid_items.access_token:7");
/// ```
///
/// Without a `table!` declaration, give the SQL names directly:
/// `encrypted_column!(pub Notes = "users"."notes");`
///
/// **Fernet opt-out.** Columns read legacy Fernet tokens while the keyring
/// has Fernet keys. A column that never held Fernet values says
/// `fernet = false` after the names: it never accepts a Fernet token (the
/// read fails with the opaque decryption error), so a token copied from
/// another column, row or backup cannot be planted in it (see
/// [`EncryptedColumn::ACCEPTS_FERNET`]):
///
/// ```
/// use manna_crypto::{AesKey, DecryptError, FernetKey, Keyring};
/// use manna_store_diesel::{EncryptedColumn, Error, Sealed};
/// manna_store_diesel::encrypted_column!(
///     /// API keys: written by manna only, never Fernet.
///     pub ApiKey = "users"."api_key", fernet = false
/// );
/// manna_store_diesel::encrypted_column!(pub Legacy = "users"."ssn");
/// assert!(!ApiKey::ACCEPTS_FERNET);
/// assert!(Legacy::ACCEPTS_FERNET); // the default
///
/// let fernet = FernetKey::generate();
/// let keyring = Keyring::builder()
///     .primary(AesKey::generate())
///     .fernet(fernet.clone())
///     .build()
///     .unwrap();
/// let planted = fernet.encrypt(b"from an old backup");
/// assert!(Sealed::<Legacy>::from_ciphertext(planted.as_str()).open(&keyring).is_ok());
/// let refused = Sealed::<ApiKey>::from_ciphertext(planted).open(&keyring);
/// assert!(matches!(
///     refused,
///     Err(Error::Decrypt { cause: DecryptError::Authentication, .. })
/// ));
/// let own = Sealed::<ApiKey>::seal(&keyring, b"key-123").unwrap();
/// assert_eq!(&*own.open(&keyring).unwrap(), b"key-123");
/// ```
///
/// With a column path: `encrypted_column!(pub ApiKey => users::api_key, fernet = false);`.
///
/// Either way both names must be SQL identifiers as the migrator accepts
/// them (ASCII letters, digits and `_`, not starting with a digit, at most 63
/// bytes), checked at compile time: `"a.b"."c"` and `"a"."b.c"` would share
/// the AAD `a.b.c`, so neither compiles.
///
/// ```compile_fail,E0080
/// manna_store_diesel::encrypted_column!(Ambiguous = "a.b"."c");
/// ```
///
/// ```compile_fail,E0080
/// manna_store_diesel::encrypted_column!(Ambiguous = "a"."b.c");
/// ```
///
/// A column named like a row AAD (`t.c:1` is the row AAD of row 1 of `t.c`):
///
/// ```compile_fail,E0080
/// manna_store_diesel::encrypted_column!(LooksLikeARow = "t"."c:1");
/// ```
///
/// ```
/// manna_store_diesel::encrypted_column!(Fine = "t"."c_1");
/// ```
///
/// A schema-qualified `table!` (`#[sql_name]` with a schema, `schema.table`)
/// does not compile either: columns are named by table and column only.
#[macro_export]
macro_rules! encrypted_column {
    ($(#[$meta:meta])* $vis:vis $name:ident => $table:ident :: $column:ident $(, fernet = $fernet:literal)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis struct $name;
        impl $crate::EncryptedColumn for $name {
            const AAD: &'static str = {
                const TABLE: &str = $crate::__private::table_sql_name::<$table::table>();
                const COLUMN: &str = <$table::$column as $crate::diesel::Column>::NAME;
                const AAD: [u8; TABLE.len() + 1 + COLUMN.len()] =
                    $crate::__private::join_column(TABLE, COLUMN);
                $crate::__private::aad_str(&AAD)
            };
            $(const ACCEPTS_FERNET: bool = $fernet;)?
        }
        const _: () = {
            $crate::__private::check_identifier(
                $crate::__private::table_sql_name::<$table::table>(),
            );
            $crate::__private::check_identifier(
                <$table::$column as $crate::diesel::Column>::NAME,
            );
        };
    };
    ($(#[$meta:meta])* $vis:vis $name:ident = $table:literal . $column:literal $(, fernet = $fernet:literal)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis struct $name;
        impl $crate::EncryptedColumn for $name {
            const AAD: &'static str = {
                const AAD: [u8; $table.len() + 1 + $column.len()] =
                    $crate::__private::join_column($table, $column);
                $crate::__private::aad_str(&AAD)
            };
            $(const ACCEPTS_FERNET: bool = $fernet;)?
        }
        const _: () = {
            $crate::__private::check_identifier($table);
            $crate::__private::check_identifier($column);
        };
    };
}

/// Compile-time support of [`encrypted_column!`](crate::encrypted_column);
/// not a public API.
#[doc(hidden)]
pub(crate) mod macro_support {
    use diesel::internal::table_macro::{Identifier, StaticQueryFragment};

    /// The SQL name of a `table!` (its `#[sql_name]`, else its Rust name):
    /// the identifier Diesel writes into every query on it.
    pub const fn table_sql_name<T>() -> &'static str
    where
        T: StaticQueryFragment<Component = Identifier<'static>>,
    {
        T::STATIC_COMPONENT.0
    }

    /// Panics (at compile time, in a `const`) unless `name` is an SQL
    /// identifier as `manna_store::Ident` accepts it.
    pub const fn check_identifier(name: &str) {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > manna_store::MAX_IDENT_LEN {
            panic!("encrypted_column!: a table or column name is empty or longer than 63 bytes");
        }
        if b[0].is_ascii_digit() {
            panic!("encrypted_column!: a table or column name starts with a digit");
        }
        let mut i = 0;
        while i < b.len() {
            if !(b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                panic!(
                    "encrypted_column!: table and column names are SQL identifiers: ASCII letters, digits and _ only"
                );
            }
            i += 1;
        }
    }

    /// The AAD bytes as text (they are joined from two `&str`).
    pub const fn aad_str(bytes: &'static [u8]) -> &'static str {
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => panic!("encrypted_column!: the AAD is not UTF-8"),
        }
    }
}

/// A secret stored encrypted in a TEXT column, decrypted on read with the
/// installed default keyring ([`install_default_keyring`]) and encrypted on
/// write with its primary key. Reads values under decrypt-only previous keys
/// transparently, and legacy Fernet tokens unless the column opted out
/// ([`EncryptedColumn::ACCEPTS_FERNET`]).
///
/// Use it as the Rust type of a `Text` column in Diesel models (or a
/// `Binary` — `BYTEA`/`BLOB` — column, which stores the compact binary
/// envelope and still reads text tokens); `C` binds the values to their column (see [`encrypted_column!`](crate::encrypted_column)).
/// There is no `Display`; `Debug` shows only the length; the bytes are
/// zeroized on drop.
///
/// ```
/// use diesel::prelude::*;
/// use manna_crypto::{AesKey, Keyring};
/// use manna_store_diesel::{install_default_keyring, Encrypted};
///
/// diesel::table! { plaid_items (id) { id -> Integer, access_token -> Text } }
/// manna_store_diesel::encrypted_column!(PlaidAccessToken => plaid_items::access_token);
///
/// #[derive(Queryable, Insertable)]
/// #[diesel(table_name = plaid_items)]
/// struct Item { id: i32, access_token: Encrypted<PlaidAccessToken> }
///
/// install_default_keyring(Keyring::new(AesKey::generate())).unwrap();
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// diesel::sql_query("CREATE TABLE plaid_items (id INTEGER PRIMARY KEY, access_token TEXT NOT NULL)")
///     .execute(&mut conn).unwrap();
/// diesel::insert_into(plaid_items::table)
///     .values(Item { id: 1, access_token: Encrypted::new("access-sandbox-123") })
///     .execute(&mut conn).unwrap();
/// // Stored as ciphertext…
/// let raw: String = plaid_items::table.select(plaid_items::access_token).first(&mut conn).unwrap();
/// assert!(!raw.contains("access-sandbox"));
/// // …read back as plaintext.
/// let item: Item = plaid_items::table.first(&mut conn).unwrap();
/// assert_eq!(item.access_token.expose_str(), Some("access-sandbox-123"));
/// assert_eq!(format!("{:?}", item.access_token), "Encrypted<plaid_items.access_token>(<18 bytes redacted>)");
/// ```
#[derive(AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[diesel(sql_type = Binary)]
pub struct Encrypted<C: EncryptedColumn> {
    plaintext: Zeroizing<Vec<u8>>,
    column: PhantomData<fn() -> C>,
}

impl<C: EncryptedColumn> Encrypted<C> {
    /// Wraps a plaintext (taken by value so no copy is left behind).
    pub fn new(plaintext: impl Into<Vec<u8>>) -> Self {
        Encrypted {
            plaintext: Zeroizing::new(plaintext.into()),
            column: PhantomData,
        }
    }

    /// The plaintext bytes.
    pub fn expose(&self) -> &[u8] {
        &self.plaintext
    }

    /// The plaintext as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.plaintext).ok()
    }

    /// Takes the plaintext out, still zeroizing.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.plaintext
    }

    /// Encrypts with an explicit keyring instead of the default one.
    pub fn seal_with(&self, keyring: &Keyring) -> Result<Sealed<C>, Error> {
        Sealed::seal(keyring, &self.plaintext)
    }

    fn encrypt_default(&self) -> Result<String, Error> {
        installed()?
            .encrypt(&self.plaintext, C::AAD.as_bytes())
            .map_err(|source| Error::Encrypt {
                column: C::AAD.to_owned(),
                cause: source,
            })
    }

    fn encrypt_default_bytes(&self) -> Result<Vec<u8>, Error> {
        installed()?
            .encrypt_to_bytes(&self.plaintext, C::AAD.as_bytes())
            .map_err(|source| Error::Encrypt {
                column: C::AAD.to_owned(),
                cause: source,
            })
    }

    fn decrypt_default_bytes(value: &[u8]) -> Result<Self, Error> {
        let pt = open_bytes::<C>(&*installed()?, value, C::AAD.as_bytes()).map_err(|source| {
            Error::Decrypt {
                column: C::AAD.to_owned(),
                cause: source,
            }
        })?;
        Ok(Encrypted::from(pt))
    }

    fn decrypt_default(token: &str) -> Result<Self, Error> {
        let pt = open_text::<C>(&*installed()?, token, C::AAD.as_bytes()).map_err(|source| {
            Error::Decrypt {
                column: C::AAD.to_owned(),
                cause: source,
            }
        })?;
        Ok(Encrypted::from(pt))
    }
}

impl<C: EncryptedColumn> From<Plaintext> for Encrypted<C> {
    fn from(p: Plaintext) -> Self {
        Encrypted {
            plaintext: p.into_inner(),
            column: PhantomData,
        }
    }
}

impl<C: EncryptedColumn> Clone for Encrypted<C> {
    fn clone(&self) -> Self {
        Encrypted {
            plaintext: self.plaintext.clone(),
            column: PhantomData,
        }
    }
}

impl<C: EncryptedColumn> PartialEq for Encrypted<C> {
    fn eq(&self, other: &Self) -> bool {
        *self.plaintext == *other.plaintext
    }
}

impl<C: EncryptedColumn> Eq for Encrypted<C> {}

impl<C: EncryptedColumn> fmt::Debug for Encrypted<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encrypted<{}>(<{} bytes redacted>)",
            C::AAD,
            self.plaintext.len()
        )
    }
}

/// A ciphertext bound to column `C`, handled with an explicit keyring.
///
/// Loading a `Sealed` value does no cryptography; [`open`](Self::open)
/// decrypts it with the keyring you pass. Row-bound AAD (`TABLE.COLUMN:ID`)
/// is available through [`seal_for_row`](Self::seal_for_row) and
/// [`open_for_row`](Self::open_for_row) for code that has the id.
///
/// ```
/// use manna_crypto::{AesKey, Keyring};
/// use manna_store_diesel::Sealed;
/// manna_store_diesel::encrypted_column!(Token = "plaid_items"."access_token");
/// manna_store_diesel::encrypted_column!(Other = "plaid_items"."public_token");
///
/// let keyring = Keyring::new(AesKey::generate());
/// let sealed = Sealed::<Token>::seal_for_row(&keyring, b"secret", 7).unwrap();
/// assert_eq!(&*sealed.open_for_row(&keyring, 7).unwrap(), b"secret");
/// assert!(sealed.open_for_row(&keyring, 8).is_err());          // another row
/// let moved = Sealed::<Other>::from_ciphertext(sealed.as_str());
/// assert!(moved.open_for_row(&keyring, 7).is_err());          // another column
/// ```
#[derive(Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Sealed<C: EncryptedColumn> {
    ciphertext: String,
    column: PhantomData<fn() -> C>,
}

impl<C: EncryptedColumn> Sealed<C> {
    /// Encrypts `plaintext` for column `C` with the keyring's primary key.
    pub fn seal(keyring: &Keyring, plaintext: &[u8]) -> Result<Self, Error> {
        Self::seal_aad(keyring, plaintext, C::AAD)
    }

    /// Encrypts `plaintext` bound to column `C` *and* row `id`.
    pub fn seal_for_row(
        keyring: &Keyring,
        plaintext: &[u8],
        id: impl fmt::Display,
    ) -> Result<Self, Error> {
        Self::seal_aad(keyring, plaintext, &C::row_aad(id))
    }

    fn seal_aad(keyring: &Keyring, plaintext: &[u8], aad: &str) -> Result<Self, Error> {
        let ciphertext = keyring
            .encrypt(plaintext, aad.as_bytes())
            .map_err(|source| Error::Encrypt {
                column: C::AAD.to_owned(),
                cause: source,
            })?;
        Ok(Sealed::from_ciphertext(ciphertext))
    }

    /// Wraps a stored ciphertext (or legacy token) without checking it.
    pub fn from_ciphertext(ciphertext: impl Into<String>) -> Self {
        Sealed {
            ciphertext: ciphertext.into(),
            column: PhantomData,
        }
    }

    /// Decrypts with `keyring` (any of its AES keys, or Fernet unless the
    /// column opted out: [`EncryptedColumn::ACCEPTS_FERNET`]).
    pub fn open(&self, keyring: &Keyring) -> Result<Plaintext, Error> {
        open_text::<C>(keyring, &self.ciphertext, C::AAD.as_bytes()).map_err(|source| {
            Error::Decrypt {
                column: C::AAD.to_owned(),
                cause: source,
            }
        })
    }

    /// Decrypts a value sealed with [`seal_for_row`](Self::seal_for_row).
    pub fn open_for_row(
        &self,
        keyring: &Keyring,
        id: impl fmt::Display,
    ) -> Result<Plaintext, Error> {
        let aad = C::row_aad(&id);
        open_text::<C>(keyring, &self.ciphertext, aad.as_bytes()).map_err(|source| Error::Decrypt {
            column: aad,
            cause: source,
        })
    }

    /// The stored text (ciphertext: safe to log by length or format, not secret
    /// by itself, but there is no reason to print it).
    pub fn as_str(&self) -> &str {
        &self.ciphertext
    }

    /// Takes the stored text out.
    pub fn into_ciphertext(self) -> String {
        self.ciphertext
    }
}

impl<C: EncryptedColumn> fmt::Debug for Sealed<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed<{}>(<{} chars>)", C::AAD, self.ciphertext.len())
    }
}

impl<C: EncryptedColumn> From<Sealed<C>> for Value {
    fn from(s: Sealed<C>) -> Self {
        Value::Text(s.ciphertext)
    }
}

/// Decrypts a text value of column `C`, refusing Fernet tokens if `C` opted
/// out of Fernet.
fn open_text<C: EncryptedColumn>(
    keyring: &Keyring,
    token: &str,
    aad: &[u8],
) -> Result<Plaintext, DecryptError> {
    if C::ACCEPTS_FERNET {
        keyring.decrypt(token, aad)
    } else {
        keyring.decrypt_without_fernet(token, aad)
    }
}

/// [`open_text`] for a value stored as bytes.
fn open_bytes<C: EncryptedColumn>(
    keyring: &Keyring,
    value: &[u8],
    aad: &[u8],
) -> Result<Plaintext, DecryptError> {
    if C::ACCEPTS_FERNET {
        keyring.decrypt_bytes(value, aad)
    } else {
        keyring.decrypt_bytes_without_fernet(value, aad)
    }
}

fn boxed(e: Error) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use diesel::pg::{Pg, PgValue};
    use std::io::Write;

    impl<C: EncryptedColumn> ToSql<Text, Pg> for Encrypted<C> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Pg>) -> serialize::Result {
            let token = self.encrypt_default().map_err(boxed)?;
            out.write_all(token.as_bytes())?;
            Ok(serialize::IsNull::No)
        }
    }

    impl<C: EncryptedColumn> FromSql<Text, Pg> for Encrypted<C> {
        fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
            let token = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
            Encrypted::decrypt_default(&token).map_err(boxed)
        }
    }

    impl<C: EncryptedColumn> ToSql<Binary, Pg> for Encrypted<C> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Pg>) -> serialize::Result {
            let value = self.encrypt_default_bytes().map_err(boxed)?;
            out.write_all(&value)?;
            Ok(serialize::IsNull::No)
        }
    }

    impl<C: EncryptedColumn> FromSql<Binary, Pg> for Encrypted<C> {
        fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
            Encrypted::decrypt_default_bytes(bytes.as_bytes()).map_err(boxed)
        }
    }

    impl<C: EncryptedColumn> ToSql<Text, Pg> for Sealed<C> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Pg>) -> serialize::Result {
            <str as ToSql<Text, Pg>>::to_sql(&self.ciphertext, out)
        }
    }

    impl<C: EncryptedColumn> FromSql<Text, Pg> for Sealed<C> {
        fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
            Ok(Sealed::from_ciphertext(
                <String as FromSql<Text, Pg>>::from_sql(bytes)?,
            ))
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use diesel::sqlite::{Sqlite, SqliteValue};

    impl<C: EncryptedColumn> ToSql<Text, Sqlite> for Encrypted<C> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Sqlite>) -> serialize::Result {
            let token = self.encrypt_default().map_err(boxed)?;
            out.set_value(token);
            Ok(serialize::IsNull::No)
        }
    }

    impl<C: EncryptedColumn> FromSql<Text, Sqlite> for Encrypted<C> {
        fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            let token = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
            Encrypted::decrypt_default(&token).map_err(boxed)
        }
    }

    impl<C: EncryptedColumn> ToSql<Binary, Sqlite> for Encrypted<C> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Sqlite>) -> serialize::Result {
            let value = self.encrypt_default_bytes().map_err(boxed)?;
            out.set_value(value);
            Ok(serialize::IsNull::No)
        }
    }

    impl<C: EncryptedColumn> FromSql<Binary, Sqlite> for Encrypted<C> {
        fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            let bytes = <Vec<u8> as FromSql<Binary, Sqlite>>::from_sql(value)?;
            Encrypted::decrypt_default_bytes(&bytes).map_err(boxed)
        }
    }

    impl<C: EncryptedColumn> ToSql<Text, Sqlite> for Sealed<C> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Sqlite>) -> serialize::Result {
            out.set_value(self.ciphertext.as_str());
            Ok(serialize::IsNull::No)
        }
    }

    impl<C: EncryptedColumn> FromSql<Text, Sqlite> for Sealed<C> {
        fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            Ok(Sealed::from_ciphertext(<String as FromSql<
                Text,
                Sqlite,
            >>::from_sql(value)?))
        }
    }
}
