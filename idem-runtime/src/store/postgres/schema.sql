-- The table of a PostgresStore: one row per (scope, key). `{table}` and `{index}` are replaced by
-- the table name the store was built with (checked to be a plain SQL identifier, optionally
-- schema-qualified) and the name of its expiry index.
CREATE TABLE IF NOT EXISTS {table} (
    -- The caller's scope (32 bytes) and the key it sent.
    scope          bytea       NOT NULL,
    key            text        NOT NULL,
    -- The record format: 1.
    version        smallint    NOT NULL,
    state          text        NOT NULL CHECK (state IN ('in_flight', 'done')),
    -- The request's fingerprint (32 bytes).
    fingerprint    bytea       NOT NULL,
    -- In flight: the claim's token (16 bytes). Done: NULL.
    token          bytea,
    -- The advisory lock that the claim holds while its request runs.
    lock_id        bigint      NOT NULL,
    -- Done: the digest of the request's exact bytes (32 bytes), when there is one.
    request_digest bytea,
    -- Done: the response, as StoredResponse::encode writes it.
    response       bytea,
    -- In flight: the end of the claim's lease. Done: the end of the record's TTL.
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
