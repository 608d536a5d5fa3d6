//! Validated SQL identifiers.
//!
//! Table and column names reach manna from command lines and config files, so
//! they are checked against a strict pattern *before* any SQL is built, and the
//! adapters quote them anyway. Values are never formatted into SQL: they are
//! always bound.

use std::fmt;
use std::str::FromStr;

/// Longest identifier accepted (PostgreSQL's `NAMEDATALEN - 1`).
pub const MAX_IDENT_LEN: usize = 63;

/// A validated SQL identifier: ASCII letter or `_`, then ASCII letters,
/// digits or `_`, at most [`MAX_IDENT_LEN`] bytes.
///
/// ```
/// use manna_store::Ident;
/// assert!(Ident::new("plaid_items").is_ok());
/// assert!(Ident::new("items; DROP TABLE users").is_err());
/// assert_eq!(Ident::new("access_token").unwrap().quoted(), "\"access_token\"");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

/// Why a string is not a valid [`Ident`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentError {
    /// The identifier is empty.
    #[error("invalid SQL identifier: empty")]
    Empty,
    /// The identifier is longer than [`MAX_IDENT_LEN`].
    #[error("invalid SQL identifier: longer than {MAX_IDENT_LEN} characters")]
    TooLong,
    /// The identifier contains a character outside `[A-Za-z0-9_]` or starts with a digit.
    #[error(
        "invalid SQL identifier {shown:?}: use letters, digits and '_', not starting with a digit"
    )]
    BadCharacter {
        /// The offending identifier, cut to [`MAX_IDENT_LEN`] characters.
        shown: String,
    },
    /// `TABLE.COLUMN` was expected.
    #[error("invalid column reference {shown:?}: expected TABLE.COLUMN")]
    NotTableColumn {
        /// The offending text, cut to 2 × [`MAX_IDENT_LEN`] characters.
        shown: String,
    },
}

impl Ident {
    /// Validates `s` as an identifier.
    pub fn new(s: &str) -> Result<Self, IdentError> {
        if s.is_empty() {
            return Err(IdentError::Empty);
        }
        if s.len() > MAX_IDENT_LEN {
            return Err(IdentError::TooLong);
        }
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(IdentError::BadCharacter {
                shown: s.chars().take(MAX_IDENT_LEN).collect(),
            });
        }
        Ok(Ident(s.to_owned()))
    }

    /// The identifier as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier double-quoted for SQL (valid on PostgreSQL and SQLite).
    ///
    /// Validation already excludes `"`, so quoting cannot be escaped.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ident::new(s)
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["a", "_x", "plaid_items", "T1", &"a".repeat(MAX_IDENT_LEN)] {
            assert_eq!(Ident::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_injection_and_odd_names() {
        for bad in [
            "1abc",
            "a b",
            "a;b",
            "a\"b",
            "a'--",
            "x); DROP TABLE t; --",
            "é",
            "a.b",
            "a-b",
            "a\0",
        ] {
            assert!(
                matches!(Ident::new(bad), Err(IdentError::BadCharacter { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(Ident::new(""), Err(IdentError::Empty));
        assert_eq!(
            Ident::new(&"a".repeat(MAX_IDENT_LEN + 1)),
            Err(IdentError::TooLong)
        );
    }
}
