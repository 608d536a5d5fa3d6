#![doc = include_str!("../README.md")]

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("manna-store-diesel needs a backend: enable the `postgres` and/or `sqlite` feature");

mod column_store;
mod conn;
mod dsl;
mod encrypted;
mod error;
mod fence;
mod idempotent;
#[cfg(feature = "db-lock")]
mod lock;
mod pool;
pub mod schema;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;
mod url;
mod versioned;

pub use column_store::DieselStore;
pub use conn::{Dialect, StoreConnection};
pub use encrypted::{
    default_keyring, install_default_keyring, reload_default_keyring, replace_default_keyring,
    Encrypted, EncryptedColumn, Sealed,
};
pub use error::Error;
pub use fence::Fence;
pub use idempotent::{CasOutcome, IdempotentCas};
#[cfg(feature = "db-lock")]
pub use lock::{DbLockBackend, DEFAULT_LOCK_TIMEOUT};
#[cfg(feature = "postgres")]
pub use pool::{pg_pool, PgPool};
#[cfg(feature = "sqlite")]
pub use pool::{sqlite_pool, SqlitePool};
pub use pool::{DbConnection, DbPool, PoolOptions};
pub use url::DatabaseUrl;
pub use versioned::{Changes, Value, VersionedTable};

/// Diesel, re-exported so applications use the same version.
pub use diesel;

#[doc(hidden)]
pub mod __private {
    pub use crate::encrypted::macro_support::{aad_str, check_identifier, table_sql_name};
    pub use manna_crypto::aad::join_column;
    pub use manna_lock::ConflictError;
}
