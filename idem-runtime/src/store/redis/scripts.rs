//! The Lua scripts behind every [`RedisStore`](super::RedisStore) operation: each runs on one key,
//! atomically with respect to every other client.

use ::redis::Script;

/// Creates the in-flight record if the key is free, or renews the lease of the record this very
/// token holds (a repeated claim); otherwise answers the existing record, its remaining time to
/// live in milliseconds first.
///
/// KEYS[1] record; ARGV[1] version, ARGV[2] token, ARGV[3] fingerprint, ARGV[4] lease (ms).
const CLAIM: &str = r"
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'state', 'in_flight', 'token', ARGV[2], 'fp', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
if redis.call('HGET', KEYS[1], 'token') == ARGV[2] and redis.call('HGET', KEYS[1], 'state') == 'in_flight' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
table.insert(record, 1, redis.call('PTTL', KEYS[1]))
return record
";

/// Replaces the record with the done one if it is still in flight under this token, or if there is
/// no record at all (the lease lapsed and nobody claimed the key since). Answers 1 when written.
///
/// KEYS[1] record; ARGV[1] version, ARGV[2] token, ARGV[3] fingerprint, ARGV[4] response,
/// ARGV[5] TTL (ms), ARGV[6] request digest (empty for none).
const COMPLETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'state', 'done', 'fp', ARGV[3], 'response', ARGV[4])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'rq', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Deletes the record if it is in flight under this token.
///
/// KEYS[1] record; ARGV[1] token.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Answers the record, its remaining time to live in milliseconds first, or an empty array.
///
/// KEYS[1] record.
const LOOKUP: &str = r"
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then
  return record
end
table.insert(record, 1, redis.call('PTTL', KEYS[1]))
return record
";

/// The scripts, hashed once (`EVALSHA`, and loaded again on its own after a Redis restart).
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) complete: Script,
    pub(super) release: Script,
    pub(super) lookup: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            lookup: Script::new(LOOKUP),
        }
    }
}
