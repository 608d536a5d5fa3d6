//! Database URLs: which backend, and how to show one without its password.

use std::fmt;

use manna_lock::redact::redact_url;

use crate::conn::Dialect;
use crate::error::Error;

/// A parsed `DATABASE_URL`.
///
/// - `postgres://…` / `postgresql://…` — PostgreSQL (libpq URI, passed as is);
/// - `sqlite://PATH`, `sqlite:PATH` or a plain path — SQLite
///   (`sqlite:///abs/path.db` is the absolute path `/abs/path.db`);
/// - `sqlite::memory:` or `:memory:` — a private in-memory SQLite database.
///
/// `Debug` and `Display` show the URL with everything between `://` and the
/// last `@` (user and password) replaced by `***` ([`manna_lock::redact::redact_url`]).
///
/// ```
/// use manna_store_diesel::DatabaseUrl;
/// let u = DatabaseUrl::parse("postgres://app:s3cret@db:5432/prod").unwrap();
/// assert_eq!(u.to_string(), "postgres://***@db:5432/prod");
/// let s = DatabaseUrl::parse("sqlite:///var/lib/app.db").unwrap();
/// assert_eq!(s.sqlite_path(), Some("/var/lib/app.db"));
/// assert_eq!(DatabaseUrl::parse("data/app.db").unwrap().sqlite_path(), Some("data/app.db"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    dialect: Dialect,
    /// What the driver gets.
    target: String,
    /// What people see.
    shown: String,
}

impl DatabaseUrl {
    /// Parses a URL or path. Only the shape is checked; nothing is connected.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        let shown = redact_url(url);
        if url.is_empty() {
            return Err(Error::BadUrl {
                url: shown,
                reason: "empty database URL".into(),
            });
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(DatabaseUrl {
                dialect: Dialect::Postgres,
                target: url.to_owned(),
                shown,
            });
        }
        let path = if let Some(rest) = strip_prefix_ci(url, "sqlite://") {
            rest
        } else if let Some(rest) = strip_prefix_ci(url, "sqlite:") {
            rest
        } else if url.contains("://") {
            return Err(Error::BadUrl {
                url: shown,
                reason: "expected postgres://…, sqlite://PATH or a file path".into(),
            });
        } else {
            url
        };
        let target = match path {
            ":memory:" | "" => ":memory:".to_owned(),
            p => p.to_owned(),
        };
        Ok(DatabaseUrl {
            dialect: Dialect::Sqlite,
            target,
            shown,
        })
    }

    /// The backend this URL names.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The SQLite file path (`:memory:` for in-memory), or `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&str> {
        (self.dialect == Dialect::Sqlite).then_some(self.target.as_str())
    }

    /// Whether this is an in-memory SQLite database.
    pub fn is_memory(&self) -> bool {
        self.dialect == Dialect::Sqlite && self.target == ":memory:"
    }

    /// The URL with its password redacted.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// What the driver is given (contains the password, if any).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.shown).finish()
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dialects() {
        for (u, d) in [
            ("postgres://root@127.0.0.1:5432/test", Dialect::Postgres),
            ("postgresql://x/y", Dialect::Postgres),
            ("sqlite://a.db", Dialect::Sqlite),
            ("sqlite:a.db", Dialect::Sqlite),
            ("/tmp/a.db", Dialect::Sqlite),
            (":memory:", Dialect::Sqlite),
        ] {
            assert_eq!(DatabaseUrl::parse(u).unwrap().dialect(), d, "{u}");
        }
        assert!(DatabaseUrl::parse("mysql://x/y").is_err());
        assert!(DatabaseUrl::parse("").is_err());
        assert!(DatabaseUrl::parse("sqlite::memory:").unwrap().is_memory());
    }

    #[test]
    fn passwords_never_shown() {
        let u = DatabaseUrl::parse("postgres://app:hunter2@db/x?password=hunter3").unwrap();
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert_eq!(
            redact_url("host=db password=pw user=u"),
            "host=db password=*** user=u"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://***@h/db");
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db"),
            "postgres://***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:p#s/s?w@rd@h/db"),
            "postgres://***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=x&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact_url("sqlite://app.db"), "sqlite://app.db");
    }
}
