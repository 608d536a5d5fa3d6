//! The crate's error type and the mapping of driver errors onto
//! [`StoreErrorKind`].

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use manna_lock::{ConflictError, IsConflict};
use manna_store::{IdentError, StoreError, StoreErrorKind};

/// Everything that can go wrong in this crate.
///
/// Messages name tables, columns, row ids and (redacted) URLs, never a stored
/// value, a plaintext or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached (or the pool could not hand out a
    /// connection). `url` has its password removed.
    #[error("database unavailable at {url}: {reason}")]
    Unavailable {
        /// The database URL, password redacted.
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// The URL names no supported backend, or one this build lacks.
    #[error("unsupported database URL {url}: {reason}")]
    BadUrl {
        /// The database URL, password redacted.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// An optimistic-lock conflict: the row changed or disappeared since it
    /// was read. Retry from a fresh read ([`manna_lock::RetryPolicy`]).
    #[error(transparent)]
    Conflict(#[from] ConflictError),
    /// A fenced write carried a token lower than one already seen for the
    /// resource: a newer lock holder exists, so this writer's lease is gone.
    #[error(
        "stale fencing token {token} for resource {resource}: a newer lock holder already wrote with token {highest}"
    )]
    StaleToken {
        /// The fenced resource.
        resource: String,
        /// The token this write carried.
        token: u64,
        /// The highest token recorded for the resource.
        highest: u64,
    },
    /// A fenced write carried the token the fence recorded for another lock
    /// holder: two leases were given one token (the lock backend's counter
    /// went back, e.g. Redis restarted from an older snapshot), or the token
    /// was recorded by a version of manna that did not record holders. The
    /// writer cannot prove it is the holder that wrote, so it is refused.
    #[error(
        "fencing token {token} for resource {resource} was recorded for another lock holder (two leases got one token: the lock's counter went back), or before holders were recorded; this write is refused"
    )]
    TokenOfAnotherHolder {
        /// The fenced resource.
        resource: String,
        /// The token this write carried.
        token: u64,
    },
    /// A versioned write targeted a table without its version column.
    #[error(
        "table {table} has no version column {column:?}: add it first (manna_store_diesel::schema::add_version_column, `{column} INTEGER NOT NULL DEFAULT 1`)"
    )]
    NoVersionColumn {
        /// The table.
        table: String,
        /// The missing column.
        column: String,
    },
    /// A table or column name failed validation; no SQL was built.
    #[error(transparent)]
    Identifier(#[from] IdentError),
    /// An operation id was already recorded for a different row.
    #[error("operation id {operation_id:?} was already used for {entity} id {id}")]
    OperationReused {
        /// The operation id.
        operation_id: String,
        /// The table it was recorded for.
        entity: String,
        /// The row id it was recorded for.
        id: String,
    },
    /// A fencing token does not fit the database's signed 64-bit integer.
    #[error("fencing token {0} is out of range (at most 2^63 - 1)")]
    TokenOutOfRange(u64),
    /// Encrypted columns were used without an installed default keyring.
    #[error(
        "no default keyring installed: call manna_store_diesel::install_default_keyring at startup, or use the explicit-keyring API (Sealed)"
    )]
    NoDefaultKeyring,
    /// A default keyring was already installed.
    #[error("a default keyring is already installed")]
    KeyringAlreadyInstalled,
    /// Reloading the default keyring failed; the installed one stays.
    #[error("cannot reload the keyring (the installed one stays in use): {reason}")]
    KeyReload {
        /// The key source's error (names variables and files, never keys).
        reason: String,
    },
    /// Encrypting a value failed.
    // Causes are part of the messages, so they are not also a `source()`:
    // error reports that walk the chain would print them twice.
    #[error("encrypting a value for {column} failed: {cause}")]
    Encrypt {
        /// `TABLE.COLUMN`.
        column: String,
        /// The cause.
        cause: manna_crypto::CryptoError,
    },
    /// Decrypting a value failed (wrong column or row, unknown key, tampering…).
    #[error("decrypting a value of {column} failed: {cause}")]
    Decrypt {
        /// `TABLE.COLUMN` (and the row id for row-bound values).
        column: String,
        /// The cause.
        cause: manna_crypto::DecryptError,
    },
    /// Any other database error, classified.
    #[error("{message}")]
    Database {
        /// Its kind.
        kind: StoreErrorKind,
        /// The driver's message (never its detail, which may quote values).
        message: String,
    },
}

impl Error {
    /// The [`StoreErrorKind`] this error falls under.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            Error::Unavailable { .. } => StoreErrorKind::Unavailable,
            Error::Conflict(_) => StoreErrorKind::Conflict,
            Error::StaleToken { .. } | Error::TokenOfAnotherHolder { .. } => StoreErrorKind::Fenced,
            Error::NoVersionColumn { .. } => StoreErrorKind::Unsupported,
            Error::OperationReused { .. } => StoreErrorKind::Constraint,
            Error::Database { kind, .. } => *kind,
            _ => StoreErrorKind::Other,
        }
    }

    pub(crate) fn other(message: impl Into<String>) -> Self {
        Error::Database {
            kind: StoreErrorKind::Other,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Error::Database {
            kind: StoreErrorKind::Unsupported,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Error::Database {
            kind: StoreErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// Maps a missing-column error on `column` to [`Error::NoVersionColumn`].
    pub(crate) fn or_no_version(self, table: &str, column: &str) -> Self {
        match &self {
            Error::Database {
                kind: StoreErrorKind::NotFound,
                message,
            } if mentions_missing_column(message, column) => Error::NoVersionColumn {
                table: table.to_owned(),
                column: column.to_owned(),
            },
            _ => self,
        }
    }
}

fn mentions_missing_column(message: &str, column: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let c = column.to_ascii_lowercase();
    // PostgreSQL: column "version" does not exist / column t.version does not exist
    // SQLite: no such column: version / no such column: t.version
    (m.contains("no such column") || (m.contains("column") && m.contains("does not exist")))
        && m.contains(&c)
}

/// Classifies a driver error by Diesel's kind, else by its message.
///
/// Diesel 2.3 does not expose PostgreSQL's SQLSTATE (diesel-rs/diesel#5232)
/// nor SQLite's extended result code beyond the constraint kinds, so the
/// rest goes by message. SQLite's messages are fixed English strings (one per
/// result code, never translated); PostgreSQL's follow `lc_messages`, which
/// the pool sets to `C` on every connection where the role may (see
/// `PgMessages` in `pool.rs`).
fn classify(kind: &DatabaseErrorKind, message: &str) -> StoreErrorKind {
    match kind {
        DatabaseErrorKind::UniqueViolation
        | DatabaseErrorKind::ForeignKeyViolation
        | DatabaseErrorKind::NotNullViolation
        | DatabaseErrorKind::CheckViolation
        | DatabaseErrorKind::RestrictViolation
        | DatabaseErrorKind::ExclusionViolation => StoreErrorKind::Constraint,
        DatabaseErrorKind::SerializationFailure => StoreErrorKind::Conflict,
        DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
            StoreErrorKind::Unavailable
        }
        _ => {
            let m = message.to_ascii_lowercase();
            if m.contains("deadlock")
                || m.contains("could not serialize")
                || m.contains("database is locked")
                || m.contains("database table is locked")
                || m.contains("lock timeout")
            {
                StoreErrorKind::Conflict
            } else if m.contains("does not exist")
                || m.contains("no such table")
                || m.contains("no such column")
            {
                StoreErrorKind::NotFound
            } else if m.contains("constraint failed") || m.contains("violates") {
                StoreErrorKind::Constraint
            } else if m.contains("terminating connection")
                || m.contains("server closed the connection")
                || m.contains("connection")
                    && (m.contains("refused") || m.contains("lost") || m.contains("broken"))
            {
                StoreErrorKind::Unavailable
            } else {
                StoreErrorKind::Other
            }
        }
    }
}

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                Error::Database {
                    kind: classify(&kind, &message),
                    message,
                }
            }
            DieselError::NotFound => Error::not_found("row not found"),
            DieselError::BrokenTransactionManager => Error::Database {
                kind: StoreErrorKind::Unavailable,
                message: "the connection's transaction state is broken".into(),
            },
            // Serialization errors come from our own column types, whose
            // messages never quote values.
            other => Error::other(other.to_string()),
        }
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::new(e.kind(), e.to_string())
    }
}

impl IsConflict for Error {
    /// Optimistic-lock conflicts and retryable database conflicts
    /// (serialization failure, deadlock, SQLite busy) are worth a fresh try.
    /// A stale fencing token is not: the writer has lost its lock.
    fn is_conflict(&self) -> bool {
        match self {
            Error::Conflict(_) => true,
            Error::Database { kind, .. } => *kind == StoreErrorKind::Conflict,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_version_column_is_recognised_on_both_dialects() {
        let pg = Error::not_found("column \"version\" does not exist");
        assert!(matches!(
            pg.or_no_version("t", "version"),
            Error::NoVersionColumn { .. }
        ));
        let lite = Error::not_found("no such column: version");
        assert!(matches!(
            lite.or_no_version("t", "version"),
            Error::NoVersionColumn { .. }
        ));
        let other = Error::not_found("no such column: balance");
        assert!(matches!(
            other.or_no_version("t", "version"),
            Error::Database { .. }
        ));
    }

    #[test]
    fn busy_and_deadlock_are_conflicts() {
        for m in ["database is locked", "deadlock detected"] {
            assert_eq!(
                classify(&DatabaseErrorKind::Unknown, m),
                StoreErrorKind::Conflict
            );
        }
        assert!(Error::Database {
            kind: StoreErrorKind::Conflict,
            message: "x".into()
        }
        .is_conflict());
        assert!(!Error::StaleToken {
            resource: "r".into(),
            token: 1,
            highest: 2
        }
        .is_conflict());
    }
}
