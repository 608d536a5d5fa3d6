//! Showing connection URLs without their secrets.
//!
//! Both adapters (the database store and the Redis lock) print the URL they
//! were given in errors and logs, and pass their driver's messages on. This
//! module is the one place that decides what of a URL may be shown. It lives
//! here because `manna-lock` is the port both adapters already depend on
//! (the Redis adapter does not and should not depend on `manna-crypto` or on
//! the store), and because it does no I/O.
//!
//! The rule fails closed: it does not try to find "the password" in a URL
//! the way a driver would (drivers disagree on unescaped `@`, `/`, `?`, `#`
//! or `%`), it hides **everything between `://` and the last `@`** of the
//! whole string, user name included. A string without `://` that holds an
//! `@` loses everything up to its last `@`. Values of password-like
//! `key=value` parameters (`password`, `sslpassword`, `pass`, `passwd`,
//! `pwd`; URL queries and libpq `key=value` strings, quoted or not) are
//! hidden too.

/// The URL (or path, or libpq `key=value` string) with everything that may
/// hold a secret replaced by `***`.
///
/// ```
/// use manna_lock::redact::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/prod"), "postgres://***@db:5432/prod");
/// // Unescaped `/`, `?`, `#`, `@` and `%` in a password: all hidden.
/// assert_eq!(redact_url("redis://:p/a?s#s@w%rd@cache:6379/0"), "redis://***@cache:6379/0");
/// assert_eq!(redact_url("postgres://h/db?user=u&password=x&sslmode=require"),
///            "postgres://h/db?user=u&password=***&sslmode=require");
/// assert_eq!(redact_url("host=db password='a b' user=u"), "host=db password=*** user=u");
/// assert_eq!(redact_url("sqlite://app.db"), "sqlite://app.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_owned(),
    };
    mask_password_parameters(&format!("{head}{rest}"))
}

/// A driver's message about `url`, with the parts of `url` that may be
/// secret removed: every occurrence of the URL itself (shown redacted), any
/// double-quoted fragment when the URL has user info (libpq quotes pieces of
/// a URL it cannot parse: `invalid percent-encoded token: "p%zz…"`), every
/// run of 4 or more characters that also occurs in the user info (raw or
/// percent-decoded), and password-like `key=value` parameters.
///
/// ```
/// use manna_lock::redact::scrub_message;
/// let url = "postgres://app:se%zzcret@db/prod";
/// let msg = r#"invalid percent-encoded token: "se%zzcret@db""#;
/// assert_eq!(scrub_message(msg, url), r#"invalid percent-encoded token: "***""#);
/// assert_eq!(scrub_message("connection refused", url), "connection refused");
/// ```
pub fn scrub_message(message: &str, url: &str) -> String {
    let mut out = if url.is_empty() {
        message.to_owned()
    } else {
        message.replace(url, &redact_url(url))
    };
    let Some(userinfo) = userinfo(url) else {
        return mask_password_parameters(&out);
    };
    if userinfo.is_empty() {
        return mask_password_parameters(&out);
    }
    out = mask_quoted(&out);
    for secret in [userinfo.to_owned(), percent_decode(userinfo)] {
        out = mask_shared_runs(&out, &secret, 4);
    }
    mask_password_parameters(&out)
}

/// Everything between `://` (or the start) and the last `@`, if there is an `@`.
fn userinfo(url: &str) -> Option<&str> {
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    rest.rfind('@').map(|at| &rest[..at])
}

/// Replaces the content of every `"…"` by `***` (an unterminated quote hides
/// everything after it).
fn mask_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut parts = s.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = false;
    for part in parts {
        inside = !inside;
        if !inside {
            out.push_str("\"***\"");
            out.push_str(part);
        }
    }
    if inside {
        // Unterminated: fail closed.
        out.push_str("\"***");
    }
    out
}

/// Replaces every run of at least `min` characters of `s` that also occurs
/// in `secret` by `***`.
fn mask_shared_runs(s: &str, secret: &str, min: usize) -> String {
    if secret.chars().count() < min {
        return if !secret.is_empty() && s.contains(secret) {
            s.replace(secret, "***")
        } else {
            s.to_owned()
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        // Longest run starting at i that occurs in the secret.
        let mut len = 0;
        let mut probe = String::new();
        for &c in &chars[i..] {
            probe.push(c);
            if secret.contains(probe.as_str()) {
                len += 1;
            } else {
                break;
            }
        }
        if len >= min {
            out.push_str("***");
            i += len;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Lossy percent-decoding (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_password_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with("password") || matches!(key.as_str(), "pass" | "passwd" | "pwd")
}

/// Hides the value of every password-like `key=value` parameter: after `?`,
/// `&`, `;`, whitespace or at the start; the value ends at `&` or
/// whitespace, or at the closing quote of a `'…'` value (unterminated: the
/// end of the string).
fn mask_password_parameters(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let before = &rest[..eq];
        let key_start = before
            .rfind(|c: char| c == '?' || c == '&' || c == ';' || c.is_whitespace())
            .map_or(0, |p| {
                p + before[p..].chars().next().map_or(1, char::len_utf8)
            });
        let key = &before[key_start..];
        out.push_str(&rest[..=eq]);
        let value = &rest[eq + 1..];
        if !is_password_key(key.trim()) {
            rest = value;
            continue;
        }
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let close = quoted.char_indices().find(|&(_, c)| {
                let hit = c == '\'' && !escaped;
                escaped = c == '\\' && !escaped;
                hit
            });
            close.map_or(value.len(), |(p, _)| p + 2)
        } else {
            value
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(value.len())
        };
        out.push_str("***");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_up_to_the_last_at_is_hidden() {
        for (url, want) in [
            ("redis://localhost", "redis://localhost"),
            ("redis://:pw@h:1/2", "redis://***@h:1/2"),
            ("redis://u:p@w@h/0", "redis://***@h/0"),
            (
                "postgres://u:a#b/c?d@e%f@db:5432/x",
                "postgres://***@db:5432/x",
            ),
            ("postgres://u@h/db", "postgres://***@h/db"),
            ("redis://h/0?password=x", "redis://h/0?password=***"),
            (
                "redis://h/0?db=1&pass=x&y=2",
                "redis://h/0?db=1&pass=***&y=2",
            ),
            ("u:pw@host/db", "***@host/db"),
            ("host=db password=pw user=u", "host=db password=*** user=u"),
            (
                "host=db password='a \\' b' user=u",
                "host=db password=*** user=u",
            ),
            ("host=db password='unterminated", "host=db password=***"),
            ("data/app.db", "data/app.db"),
            ("nonsense", "nonsense"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn driver_messages_lose_every_piece_of_the_user_info() {
        let url = "postgres://u:pa#ss/w?rd@127.0.0.1:1/test";
        let msg =
            r#"missing key/value separator "=" in URI query parameter: "rd@127.0.0.1:1/test""#;
        let shown = scrub_message(msg, url);
        assert!(!shown.contains("rd@"), "{shown}");
        let url = "redis://:s3cr%2Ft@h";
        let shown = scrub_message("auth failed for s3cr/t and s3cr%2Ft", url);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert_eq!(
            scrub_message(&format!("bad {url}"), url),
            "bad redis://***@h"
        );
        assert_eq!(mask_quoted(r#"a "b" c "d"#), r#"a "***" c "***"#);
    }
}
