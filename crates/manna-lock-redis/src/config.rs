//! Connection settings and URL redaction.

use std::time::Duration;

use manna_lock::redact::redact_url;

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
/// assert_eq!(config.redacted_url(), "redis://***@cache.internal:6379/2");
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

    /// The URL with its user info (everything between `://` and the last
    /// `@`) and any password parameter replaced by `***`.
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

    /// A driver message with every piece of this URL's secrets removed.
    pub(crate) fn scrub(&self, message: &str) -> String {
        manna_lock::redact::scrub_message(message, &self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_are_scrubbed() {
        let c = RedisLockConfig::new("redis://u:p@w#x/y?z%@h/1");
        let shown = c.scrub("failed: p@w#x/y?z% at redis://u:p@w#x/y?z%@h/1");
        assert!(!shown.contains("p@w"), "{shown}");
        assert!(shown.contains("redis://***@h/1"), "{shown}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = RedisLockConfig::new("redis://:topsecret@h:6379/3");
        let shown = format!("{c:?} {}", c.describe());
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("redis://***@h:6379/3"), "{shown}");
    }
}
