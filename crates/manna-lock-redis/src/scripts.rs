//! The Lua scripts: each is one atomic round trip.

use redis::Script;

/// KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] TTL (ms).
///
/// Returns `{1, token, ''}` when acquired, `{0, pttl, owner value}` when
/// held (the holder's owner value carries its description).
///
/// The fence counter has no TTL. When it does not exist yet (first use, or a
/// Redis that lost its data) it starts at the server's clock in microseconds,
/// so tokens keep increasing across a restart without persistence as long as
/// fewer than a million locks per second were taken on that name.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  if token == 1 then
    local now = redis.call('TIME')
    redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
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
