-- HTTP idempotency keys (README: "Idempotent HTTP endpoints", DESIGN §9, guarantee G7).
--
-- One row per (scope, key) whose response committed together with the request's effects. The row
-- is written in the request's own transaction, so it exists if and only if the effects do. Two
-- requests with one key never run at once: a transaction-level advisory lock on (scope, key) is
-- taken before this table is read; the primary key is the second line of defence.
CREATE TABLE oncely.idempotency_keys (
  -- Whose key it is (API key, account, tenant): a key never replays another scope's response.
  scope               text NOT NULL CHECK (char_length(scope) BETWEEN 1 AND 255),
  key                 text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
  -- SHA-256 of the request's fingerprint material (method, path, canonical body by default):
  -- the same key with another request is refused (422), never replayed.
  request_fingerprint bytea NOT NULL CHECK (octet_length(request_fingerprint) = 32),
  method              text NOT NULL,
  path                text NOT NULL,
  response_status     integer NOT NULL CHECK (response_status BETWEEN 100 AND 599),
  -- [[name, value], …] of the allow-listed response headers, in response order.
  response_headers    jsonb NOT NULL DEFAULT '[]',
  response_body       bytea NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  -- After this the key is treated as new (and overwritten), and the retention job may purge it.
  expires_at          timestamptz NOT NULL,
  PRIMARY KEY (scope, key)
);

-- Retention purges expired keys oldest first, in small batches.
CREATE INDEX idempotency_keys_expires_at_idx ON oncely.idempotency_keys (expires_at);
