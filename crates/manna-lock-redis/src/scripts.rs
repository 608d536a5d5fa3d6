//! The Lua scripts: each is one atomic round trip.

use redis::Script;

/// KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] TTL (ms).
///
/// Returns `{1, token, ''}` when acquired, `{0, pttl, owner value}` when
/// held (the holder's owner value carries its description).
///
/// The token is `max(counter + 1, server time in µs)` and is stored back in
/// the counter (no TTL). The clock floor keeps tokens increasing when the
/// counter goes back: a restart from an older snapshot, a failover to a
/// replica that missed the last increments, a counter lost or evicted. It
/// holds as long as the server clock does not go back by more than the
/// time between the lost grants and the next one, and fewer than a million
/// grants per second are made on one name (they then run ahead of the
/// clock by one µs each, which a later restart cannot undo). `TIME` in a
/// script needs effect replication: the default since Redis 5, asked for
/// explicitly on older servers.
const ACQUIRE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  local token
  if last < floor then
    token = floor
    redis.call('SET', KEYS[2], string.format('%.0f', token))
  else
    token = redis.call('INCR', KEYS[2])
  end
  return {1, token, ''}
end
return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1]) or ''}
";

/// KEYS[1] lock key; ARGV[1] owner, ARGV[2] channel, ARGV[3] lock name.
/// Deletes the key and publishes the name if the owner matches; 1/0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
";

/// KEYS[1] lock key; ARGV[1] owner, ARGV[2] TTL (ms). 1/0.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
        }
    }
}
