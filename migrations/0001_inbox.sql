-- The inbox, the consumer offsets and the dead letters (README: "Tables").
-- The schema and the migrations table are created by migrate() itself, under its advisory lock.

-- One row per (consumer group, message id) whose outcome is recorded. The primary key is the
-- claim: INSERT … ON CONFLICT DO NOTHING on it decides which transaction runs the handler.
CREATE TABLE oncely.inbox (
  consumer_group text NOT NULL,
  message_id     text NOT NULL CHECK (char_length(message_id) BETWEEN 1 AND 255),
  topic          text NOT NULL,
  partition      integer NOT NULL,
  "offset"       bigint NOT NULL,
  -- SHA-256 of the raw value bytes: tells a republish (same bytes) from key reuse (other bytes).
  payload_hash   bytea NOT NULL CHECK (octet_length(payload_hash) = 32),
  status         text NOT NULL CHECK (status IN ('processed', 'dead_lettered')),
  attempts       integer NOT NULL CHECK (attempts >= 0),
  first_seen_at  timestamptz NOT NULL,
  processed_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, message_id)
);

-- Retention purges by age.
CREATE INDEX inbox_processed_at_idx ON oncely.inbox (processed_at);

-- The next offset to read per partition, written in the same transaction as each outcome, so a
-- consumer resumes after the last committed outcome even when Kafka's own commit was lost.
CREATE TABLE oncely.offsets (
  consumer_group text NOT NULL,
  topic          text NOT NULL,
  partition      integer NOT NULL,
  next_offset    bigint NOT NULL CHECK (next_offset >= 0),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE oncely.dead_letters (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  consumer_group text NOT NULL,
  topic          text NOT NULL,
  partition      integer NOT NULL,
  "offset"       bigint NOT NULL,
  -- NULL when the id itself was the problem (reason invalid_message_id).
  message_id     text,
  key            bytea,
  value          bytea,
  -- [{ "key": name, "value": text, "encoding": "utf8" | "base64" }, …] in record order: lossless.
  headers        jsonb NOT NULL DEFAULT '[]',
  reason         text NOT NULL
                 CHECK (reason IN ('invalid_payload', 'invalid_message_id', 'key_reuse', 'handler_failed')),
  -- { name, message, code?, stack? (cut to 8 KB), issues? (validation), … }
  error          jsonb NOT NULL,
  attempts       integer NOT NULL CHECK (attempts >= 0),
  created_at     timestamptz NOT NULL DEFAULT now(),
  status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'retried', 'discarded')),
  resolved_at    timestamptz,
  -- One dead letter per record read: a redelivered record that is dead-lettered again (after a
  -- crash before the offset commit) must not leave a second row.
  UNIQUE (consumer_group, topic, partition, "offset")
);

CREATE INDEX dead_letters_open_idx ON oncely.dead_letters (consumer_group, status, created_at);
