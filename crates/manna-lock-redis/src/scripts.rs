//! The Lua scripts: each is one atomic round trip.

use redis::Script;

/// The Lua function `next_token(fence)` issuing the next fencing token of
/// the counter `fence` (the rule below), shared by every script that grants
/// a lease so they cannot drift apart.
macro_rules! next_token {
    () => {
        r"
local function next_token(fence)
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', fence) or '0') or 0
  if last < floor then
    redis.call('SET', fence, string.format('%.0f', floor))
    return floor
  end
  return redis.call('INCR', fence)
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
  return {1, next_token(KEYS[2]), ''}
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
  local token = next_token(KEYS[2])
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

/// The Lua function `hand_over(lock, fence, queue, waiters, channel,
/// name, waiter_prefix)`, called right after the lock key was deleted
/// (release, cancel): pops the queue (a sorted set of wait tickets, oldest
/// first) until an entry whose wait deadline has not passed (server time),
/// sets the lock to that waiter's owner value for `PX = min(its TTL, what
/// is left of its wait)`, issues the next fencing token (`next_token`,
/// which the script must define) and publishes the lease on the channel of
/// the waiter's backend, `waiter_prefix .. BACKEND_ID`, as
/// `granted TICKET PX TOKEN NAME_BYTES NAME OWNER` (the lock name's length
/// in bytes, the name, the owner value): only the process of that waiter
/// is told, and it may take the lease without a round trip. If nobody
/// receives that message (`PUBLISH` returns 0: the waiter's process is gone
/// and its pub/sub connection closed, or its listener is reconnecting), the
/// lock is taken back (the token stays spent) and the next entry is tried:
/// a killed waiter does not hold up the queue, and a deaf one retries when
/// its listener is back (and queues again, at the end). Entries whose
/// deadline passed (or unreadable ones) are dropped on the way. With nobody to hand it to, publishes the lock name on the release
/// `channel`, as every version does on release.
macro_rules! hand_over {
    () => {
        r"
local function hand_over(lock, fence, queue, waiters, channel, name, waiter_prefix)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)
    if #head == 0 then break end
    local ticket = head[1]
    redis.call('ZREM', queue, ticket)
    local entry = redis.call('HGET', waiters, ticket)
    redis.call('HDEL', waiters, ticket)
    local deadline, ttl, backend, owner
    if entry then
      deadline, ttl, backend, owner = string.match(entry, '^(%d+) (%d+) (%x+) (.+)$')
    end
    if owner then
      local px = math.min(tonumber(ttl), tonumber(deadline) - now)
      if px > 0 then
        px = string.format('%.0f', px)
        redis.call('SET', lock, owner, 'PX', px)
        local token = string.format('%.0f', next_token(fence))
        local grant = 'granted ' .. ticket .. ' ' .. px .. ' ' .. token .. ' '
        local heard = redis.call('PUBLISH', waiter_prefix .. backend, grant .. #name .. ' ' .. name .. ' ' .. owner)
        if heard > 0 then return end
        redis.call('DEL', lock)
      end
    end
  end
  redis.call('PUBLISH', channel, name)
end
"
    };
}

/// The Lua function `of_ticket(owner, ticket)`: whether an owner value
/// (`false` for no lock) belongs to the waiter with that ticket (the owner
/// value is the ticket, `;`, the holder description).
macro_rules! of_ticket {
    () => {
        r"
local function of_ticket(owner, ticket)
  return owner and string.sub(owner, 1, #ticket + 1) == ticket .. ';'
end
"
    };
}

/// The queued acquire ([`LockBackend::try_acquire_queued`]).
///
/// KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] queue (sorted set of
/// tickets, scored by arrival in server µs), KEYS[4] waiters (hash: ticket →
/// `DEADLINE_MS TTL_MS BACKEND_ID OWNER`); ARGV[1] owner (the ticket, `;`,
/// the holder description), ARGV[2] TTL (ms), ARGV[3] wait left (ms),
/// ARGV[4] ticket, ARGV[5] the waiter's backend id (hex: a release hands
/// over on that backend's waiter channel, see `hand_over`).
///
/// If the lock is free or was handed to this ticket: (re)sets it with the
/// full TTL, removes the ticket from the queue and returns `{1, token,
/// owner value}` (a new token by the rule of [`ACQUIRE`], also for a lock
/// handed over, whose token announced by the release is then never used; a
/// handed-over lock keeps the owner value its waiter queued). Otherwise queues the ticket
/// (keeping its place if it is queued already), records its deadline (now +
/// ARGV[3]), keeps both queue keys at least that long, and returns `{0,
/// pttl, holder's owner value}`.
///
/// [`LockBackend::try_acquire_queued`]: manna_lock::LockBackend::try_acquire_queued
const ACQUIRE_QUEUED: &str = concat!(
    r"
if redis.replicate_commands then redis.replicate_commands() end
",
    next_token!(),
    of_ticket!(),
    r"
local held = redis.call('GET', KEYS[1])
if not held or of_ticket(held, ARGV[4]) then
  local owner = held or ARGV[1]
  redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HDEL', KEYS[4], ARGV[4])
  return {1, next_token(KEYS[2]), owner}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[3], 'NX', string.format('%.0f', now_us), ARGV[4])
local deadline = string.format('%.0f', now_ms + tonumber(ARGV[3]))
redis.call('HSET', KEYS[4], ARGV[4], deadline .. ' ' .. ARGV[2] .. ' ' .. ARGV[5] .. ' ' .. ARGV[1])
local keep = tonumber(ARGV[3]) + 1000
for _, key in ipairs({KEYS[3], KEYS[4]}) do
  if redis.call('PTTL', key) < keep then
    redis.call('PEXPIRE', key, string.format('%.0f', keep))
  end
end
return {0, redis.call('PTTL', KEYS[1]), held}
"
);

/// KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] queue, KEYS[4]
/// waiters; ARGV[1] owner, ARGV[2] release channel, ARGV[3] lock name,
/// ARGV[4] the prefix of the waiter channels. If the owner
/// matches: deletes the lock and hands it to the first live queued waiter
/// (see `hand_over`), publishing either way; 1/0.
const RELEASE: &str = concat!(
    r"
if redis.replicate_commands then redis.replicate_commands() end
",
    next_token!(),
    hand_over!(),
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  hand_over(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"
);

/// KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] queue, KEYS[4]
/// waiters; ARGV[1] ticket, ARGV[2] release channel, ARGV[3] lock name,
/// ARGV[4] the prefix of the waiter channels ([`LockBackend::cancel_wait`]). Removes the ticket from the queue; if
/// the lock was handed to it, releases it as [`RELEASE`] does (handing it
/// on); 1 if it released, else 0.
///
/// [`LockBackend::cancel_wait`]: manna_lock::LockBackend::cancel_wait
const CANCEL: &str = concat!(
    r"
if redis.replicate_commands then redis.replicate_commands() end
",
    next_token!(),
    hand_over!(),
    of_ticket!(),
    r"
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if of_ticket(redis.call('GET', KEYS[1]), ARGV[1]) then
  redis.call('DEL', KEYS[1])
  hand_over(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"
);

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
    pub(crate) acquire_queued: Script,
    pub(crate) cancel: Script,
    pub(crate) end_wait: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: Script::new(ACQUIRE),
            acquire_in_session: Script::new(ACQUIRE_IN_SESSION),
            acquire_queued: Script::new(ACQUIRE_QUEUED),
            cancel: Script::new(CANCEL),
            end_wait: Script::new(END_WAIT),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
        }
    }
}
