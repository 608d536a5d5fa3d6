//! The associated data that binds a value to where it is stored.
//!
//! Every writer of a column — the application's column types, the migrator,
//! the command line, the Python binding — must build the same bytes, or
//! stored values stop decrypting; so they are built here and nowhere else.
//!
//! - column: `TABLE.COLUMN`, a value copied to another column does not
//!   decrypt;
//! - row: `TABLE.COLUMN:ID`, a value copied to another row does not decrypt
//!   either.
//!
//! The names are SQL identifiers (letters, digits, `_`), so neither `.` nor
//! `:` can occur inside them and two columns never share an AAD.
//!
//! ```
//! use manna_crypto::aad;
//! assert_eq!(aad::column("plaid_items", "access_token"), "plaid_items.access_token");
//! assert_eq!(aad::row("plaid_items.access_token", 7), "plaid_items.access_token:7");
//! const AAD: [u8; 3] = aad::join_column::<3>("t", "c");
//! assert_eq!(&AAD, b"t.c");
//! ```

use std::fmt;

/// Between table and column.
pub const COLUMN_SEPARATOR: u8 = b'.';
/// Between the column's AAD and the row id.
pub const ROW_SEPARATOR: u8 = b':';

/// The column AAD `TABLE.COLUMN`.
pub fn column(table: &str, column: &str) -> String {
    format!("{table}{}{column}", COLUMN_SEPARATOR as char)
}

/// The row AAD `TABLE.COLUMN:ID`, from the column's AAD.
pub fn row(column_aad: &str, id: impl fmt::Display) -> String {
    format!("{column_aad}{}{id}", ROW_SEPARATOR as char)
}

/// [`column()`] at compile time, for macros that bind a column type to its
/// AAD; `N` must be `table.len() + 1 + column.len()`.
pub const fn join_column<const N: usize>(table: &str, column: &str) -> [u8; N] {
    let (t, c) = (table.as_bytes(), column.as_bytes());
    assert!(t.len() + 1 + c.len() == N, "join_column: wrong length");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < t.len() {
        out[i] = t[i];
        i += 1;
    }
    out[t.len()] = COLUMN_SEPARATOR;
    let mut j = 0;
    while j < c.len() {
        out[t.len() + 1 + j] = c[j];
        j += 1;
    }
    out
}
