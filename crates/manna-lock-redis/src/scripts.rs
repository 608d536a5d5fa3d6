//! The Lua scripts: each is one atomic round trip.

use redis::Script;

/// The Lua function issuing the next fencing token of KEYS[2] (the rule
/// below), shared by both acquire scripts so they cannot drift apart.
macro_rules! next_token {
    () => {
        r"
local function next_token()
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if last < floor then
    redis.call('SET', KEYS[2], string.format('%.0f', floor))
    return floor
  end
  return redis.call('INCR', KEYS[2])
end
"
    };
}

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
const ACQUIRE: &str = concat!(
    r"
if redis.replicate_commands then redis.replicate_commands() end
",
    next_token!(),
    r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, next_token(), ''}
end
return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1]) or ''}
"
);

/// The session-aware acquire ([`LockBackend::try_acquire_in_session`]),
/// with deadlock detection, in one atomic script.
///
/// KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] the session's wait-for
/// edge; ARGV[1] owner (it carries the session: `random@session;holder`),
/// ARGV[2] TTL (ms), ARGV[3] session id, ARGV[4] lock name, ARGV[5] edge TTL
/// (ms; 0: a try, no edge and no check), ARGV[6] key namespace, ARGV[7] the
/// longest chain to follow.
///
/// Returns `{1, token, '', {}}` when acquired (and drops the session's edge
/// on this lock), `{0, pttl, owner value, {}}` when held (after recording the
/// edge `session waits for name`, expiring after ARGV[5] ms), `{2, 0, '',
/// cycle}` when waiting would close a cycle (the lock names from ARGV[4] on;
/// the edge is dropped). The walk reads the holder's session out of each
/// lock's owner value and the edge of each session, keys the script cannot
/// declare in advance: fine on one Redis server, not on Redis Cluster
/// (unless every lock of a cycle shares a hash slot).
///
/// [`LockBackend::try_acquire_in_session`]: manna_lock::LockBackend::try_acquire_in_session
const ACQUIRE_IN_SESSION: &str = concat!(
    r"
if redis.replicate_commands then redis.replicate_commands() end
",
    next_token!(),
    r"
local function end_wait()
  if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = next_token()
  end_wait()
  return {1, token, '', {}}
end
local function session_of(owner)
  if not owner then return nil end
  return string.match(owner, '^[^;@]*@([^;]+)')
end
local value = redis.call('GET', KEYS[1]) or ''
local pttl = redis.call('PTTL', KEYS[1])
if tonumber(ARGV[5]) > 0 then
  local cycle = {ARGV[4]}
  local s = session_of(value)
  local steps = 0
  while s and steps < tonumber(ARGV[7]) do
    if s == ARGV[3] then
      end_wait()
      return {2, 0, '', cycle}
    end
    local waits = redis.call('GET', ARGV[6] .. 'waits:' .. s)
    if not waits then break end
    cycle[#cycle + 1] = waits
    s = session_of(redis.call('GET', ARGV[6] .. '{' .. waits .. '}'))
    steps = steps + 1
  end
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
end
return {0, pttl, value, {}}
"
);

/// KEYS[1] a session's wait-for edge; ARGV[1] lock name. Deletes the edge
/// if it is on that lock; 1/0.
const END_WAIT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
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
    pub(crate) acquire_in_session: Script,
    pub(crate) end_wait: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: Script::new(ACQUIRE),
            acquire_in_session: Script::new(ACQUIRE_IN_SESSION),
            end_wait: Script::new(END_WAIT),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
        }
    }
}
