//! Connection settings and URL redaction.

use std::time::Duration;

/// The environment variable naming the Redis server: `REDIS_URL`.
pub const REDIS_URL_VAR: &str = "REDIS_URL";

/// The default key namespace: `manna:lock:`.
pub const DEFAULT_NAMESPACE: &str = "manna:lock:";

/// How to reach Redis and where to keep the locks.
///
/// ```
/// use manna_lock_redis::RedisLockConfig;
/// use std::time::Duration;
/// let config = RedisLockConfig::new("redis://:s3cret@cache.internal:6379/2")
///     .namespace("billing:lock:")
///     .response_timeout(Duration::from_millis(500));
/// assert_eq!(config.redacted_url(), "redis://:***@cache.internal:6379/2");
/// assert_eq!(config.namespace_str(), "billing:lock:");
/// ```
#[derive(Clone)]
pub struct RedisLockConfig {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) response_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) from_env: bool,
}

impl std::fmt::Debug for RedisLockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockConfig")
            .field("url", &self.redacted_url())
            .field("namespace", &self.namespace)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl RedisLockConfig {
    /// Settings for the server at `url` (`redis://[user][:password@]host[:port][/db]`,
    /// `rediss://…` is not enabled in this build), with the default
    /// namespace, a 1 s response timeout and a 1 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            response_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            from_env: false,
        }
    }

    /// Settings from `REDIS_URL`, or `None` when it is unset or empty.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var(REDIS_URL_VAR).ok()?;
        if url.trim().is_empty() {
            return None;
        }
        let mut config = Self::new(url.trim());
        config.from_env = true;
        Some(config)
    }

    /// Prefix of every key and channel (default `manna:lock:`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The longest wait for any single answer from Redis before the call
    /// fails with `Unavailable`.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The longest wait for a TCP connection (and each reconnection attempt).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The namespace.
    pub fn namespace_str(&self) -> &str {
        &self.namespace
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// How the backend names itself in errors.
    pub(crate) fn describe(&self) -> String {
        let origin = if self.from_env {
            format!(" (from {REDIS_URL_VAR})")
        } else {
            String::new()
        };
        format!("redis at {}{origin}", self.redacted_url())
    }

    /// The password in the URL, if any, to scrub it from driver messages.
    pub(crate) fn secret(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let authority = rest.split(['/', '?']).next()?;
        let (userinfo, _) = authority.rsplit_once('@')?;
        let secret = match userinfo.split_once(':') {
            Some((_, password)) => password,
            None => userinfo,
        };
        (!secret.is_empty()).then(|| secret.to_owned())
    }
}

/// Replaces the password of a Redis URL by `***` (a lone user-info part is
/// treated as a password too, and so are `password=`/`pass=` query
/// parameters), so the URL can be shown in errors and logs.
///
/// ```
/// use manna_lock_redis::redact_url;
/// assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
/// assert_eq!(redact_url("redis://app:hunter2@db:6379/1"), "redis://app:***@db:6379/1");
/// assert_eq!(redact_url("redis://hunter2@db"), "redis://***@db");
/// assert_eq!(redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
///            "redis+unix:///run/redis.sock?db=1&pass=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, password)) if !password.is_empty() => format!("{user}:***@{host}"),
            Some((user, _)) => format!("{user}:@{host}"),
            None if userinfo.is_empty() => format!("@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        for (url, want) in [
            ("redis://localhost", "redis://localhost"),
            ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
            ("redis://u:p@w@h/0", "redis://u:***@h/0"),
            ("redis://u:@h", "redis://u:@h"),
            ("redis://h/0?password=x", "redis://h/0?password=***"),
            ("nonsense", "<unparseable URL>"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn secret_is_found_for_scrubbing() {
        assert_eq!(
            RedisLockConfig::new("redis://:pw@h").secret().as_deref(),
            Some("pw")
        );
        assert_eq!(
            RedisLockConfig::new("redis://u:p@w@h/1")
                .secret()
                .as_deref(),
            Some("p@w")
        );
        assert_eq!(RedisLockConfig::new("redis://h:6379").secret(), None);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = RedisLockConfig::new("redis://:topsecret@h:6379/3");
        let shown = format!("{c:?} {}", c.describe());
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("redis://:***@h:6379/3"), "{shown}");
    }
}
