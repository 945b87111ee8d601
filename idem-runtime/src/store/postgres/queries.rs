//! The SQL of every store operation, written once for the store's table.
//!
//! Times come from the database's clock (`clock_timestamp()`), so that instances whose clocks
//! differ still agree on when a lease or a TTL ends. Durations are bound in milliseconds.

use super::schema::TableName;

/// Whether the advisory lock of the row `t` is held by some session: the claim that wrote an
/// in-flight row holds it for as long as its connection lives. `pg_locks` shows a bigint key as
/// its high half in `classid` and its low half in `objid`, with `objsubid` 1.
const HELD: &str = "EXISTS (SELECT 1 FROM pg_locks l \
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND l.classid = ((t.lock_id >> 32) & 4294967295)::oid \
     AND l.objid = (t.lock_id & 4294967295)::oid)";

/// The store's statements.
pub(super) struct Queries {
    /// `$1` scope, `$2` key: the row, whether its lease or TTL is still running, and (in flight
    /// only) whether its claim's lock is held.
    pub(super) read: String,
    /// `$1` scope, `$2` key, `$3` version, `$4` fingerprint, `$5` token, `$6` lock id, `$7`
    /// lease (ms): takes the key's advisory lock `$6` if it is free, without waiting, and only if
    /// it took it writes the in-flight row, unless a done row is still within its TTL. Answers one
    /// row: `locked`, whether it took the lock, and `written`, whether it wrote the row. The row is
    /// written only under the key's lock, so any in-flight row it replaces is orphaned. One
    /// statement, so that a claim costs one round trip after its read, not one for the lock and
    /// another for the row.
    pub(super) claim: String,
    /// `$1` scope, `$2` key, `$3` token, `$4` lease (ms): extends the lease of this token's claim.
    pub(super) renew: String,
    /// `$1` scope, `$2` key, `$3` version, `$4` fingerprint, `$5` lock id, `$6` request digest,
    /// `$7` response, `$8` TTL (ms), `$9` token: writes the done row if the row is in flight
    /// under this token, absent, or past its lease or TTL. Answers a row when written.
    pub(super) complete: String,
    /// `$1` scope, `$2` key, `$3` token: deletes the in-flight row of this token.
    pub(super) release: String,
    /// `$1` most rows: deletes expired rows, done ones and in-flight ones whose lock is free.
    /// Answers the number deleted.
    pub(super) sweep: String,
}

impl Queries {
    pub(super) fn new(table: &TableName) -> Self {
        Self {
            read: format!(
                "SELECT t.version, t.state, t.fingerprint, t.request_digest, t.response, \
                 t.expires_at > clock_timestamp() AS live, \
                 CASE WHEN t.state = 'in_flight' THEN {HELD} ELSE false END AS held \
                 FROM {table} t WHERE t.scope = $1 AND t.key = $2"
            ),
            // The lock is taken once, before the row is written: a CTE that calls a volatile
            // function is evaluated once, and the insertion reads it.
            claim: format!(
                "WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock($6) AS locked), \
                 w AS (INSERT INTO {table} AS t \
                 (scope, key, version, state, fingerprint, token, lock_id, expires_at) \
                 SELECT $1, $2, $3, 'in_flight', $4, $5, $6, \
                 clock_timestamp() + $7 * interval '1 millisecond' FROM l WHERE l.locked \
                 ON CONFLICT (scope, key) DO UPDATE SET \
                 version = EXCLUDED.version, state = 'in_flight', \
                 fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, \
                 lock_id = EXCLUDED.lock_id, request_digest = NULL, response = NULL, \
                 expires_at = EXCLUDED.expires_at \
                 WHERE t.state = 'in_flight' OR t.expires_at <= clock_timestamp() \
                 RETURNING 1) \
                 SELECT l.locked, EXISTS (SELECT 1 FROM w) AS written FROM l"
            ),
            renew: format!(
                "UPDATE {table} SET expires_at = clock_timestamp() + $4 * interval '1 millisecond' \
                 WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND token = $3"
            ),
            complete: format!(
                "INSERT INTO {table} AS t \
                 (scope, key, version, state, fingerprint, token, lock_id, request_digest, \
                 response, expires_at) \
                 VALUES ($1, $2, $3, 'done', $4, NULL, $5, $6, $7, \
                 clock_timestamp() + $8 * interval '1 millisecond') \
                 ON CONFLICT (scope, key) DO UPDATE SET \
                 version = EXCLUDED.version, state = 'done', \
                 fingerprint = EXCLUDED.fingerprint, token = NULL, lock_id = EXCLUDED.lock_id, \
                 request_digest = EXCLUDED.request_digest, response = EXCLUDED.response, \
                 expires_at = EXCLUDED.expires_at \
                 WHERE (t.state = 'in_flight' AND t.token = $9) \
                 OR t.expires_at <= clock_timestamp() \
                 RETURNING 1"
            ),
            release: format!(
                "DELETE FROM {table} \
                 WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND token = $3"
            ),
            sweep: format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
                 SELECT t.ctid FROM {table} t WHERE t.expires_at <= clock_timestamp() \
                 AND (t.state = 'done' OR NOT {HELD}) \
                 LIMIT $1 FOR UPDATE SKIP LOCKED))"
            ),
        }
    }
}
