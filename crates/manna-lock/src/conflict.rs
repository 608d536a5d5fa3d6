//! The optimistic-concurrency domain: what a stale write looks like.

use std::fmt;

/// Why an optimistic write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConflictKind {
    /// The row's version (or compared value) changed since it was read.
    RowChanged,
    /// The row no longer exists.
    RowGone,
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RowChanged => "the row changed since it was read",
            Self::RowGone => "the row no longer exists",
        })
    }
}

/// An optimistic-lock (stale data) conflict: a write that was computed from a
/// read that is no longer current.
///
/// It names the entity (usually the table) and the row id, never any value.
/// The usual reaction is to re-read and try again, which is what
/// [`RetryPolicy`](crate::RetryPolicy) does.
///
/// ```
/// use manna_lock::{ConflictError, ConflictKind, IsConflict};
/// let e = ConflictError::row_changed("plaid_items", "42");
/// assert_eq!(e.kind(), ConflictKind::RowChanged);
/// assert!(e.is_conflict());
/// assert_eq!(
///     e.to_string(),
///     "optimistic lock conflict on plaid_items id 42: the row changed since it was read"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("optimistic lock conflict on {entity} id {id}: {kind}")]
pub struct ConflictError {
    entity: String,
    id: String,
    kind: ConflictKind,
}

impl ConflictError {
    /// A conflict of the given kind on row `id` of `entity`.
    pub fn new(entity: impl Into<String>, id: impl Into<String>, kind: ConflictKind) -> Self {
        Self {
            entity: entity.into(),
            id: id.into(),
            kind,
        }
    }

    /// The row changed since it was read (version mismatch).
    pub fn row_changed(entity: impl Into<String>, id: impl Into<String>) -> Self {
        Self::new(entity, id, ConflictKind::RowChanged)
    }

    /// The row was deleted since it was read.
    pub fn row_gone(entity: impl Into<String>, id: impl Into<String>) -> Self {
        Self::new(entity, id, ConflictKind::RowGone)
    }

    /// The entity (table) name.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The row id, as text.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What kind of conflict.
    pub fn kind(&self) -> ConflictKind {
        self.kind
    }
}

/// Tells the retry policy whether an error is an optimistic-lock conflict
/// (worth retrying from a fresh read) or anything else (never retried).
///
/// Implement it for your own error types, usually by delegating to the
/// variant that wraps a [`ConflictError`]:
///
/// ```
/// use manna_lock::{ConflictError, IsConflict};
/// #[derive(Debug)]
/// enum AppError { Conflict(ConflictError), Io(std::io::Error) }
/// impl IsConflict for AppError {
///     fn is_conflict(&self) -> bool { matches!(self, AppError::Conflict(_)) }
/// }
/// assert!(AppError::Conflict(ConflictError::row_gone("t", "1")).is_conflict());
/// assert!(!AppError::Io(std::io::Error::other("disk")).is_conflict());
/// ```
pub trait IsConflict {
    /// `true` when retrying from a fresh read may succeed.
    fn is_conflict(&self) -> bool;
}

impl IsConflict for ConflictError {
    fn is_conflict(&self) -> bool {
        true
    }
}

impl<E: IsConflict + ?Sized> IsConflict for Box<E> {
    fn is_conflict(&self) -> bool {
        (**self).is_conflict()
    }
}

impl<E: IsConflict + ?Sized> IsConflict for &E {
    fn is_conflict(&self) -> bool {
        (**self).is_conflict()
    }
}
