-- The transactional outbox (README: "Publishing events"). A row is inserted in the caller's own
-- transaction, so an event exists if and only if the effects it reports committed; a relay sends
-- committed rows to Kafka and marks them sent after the broker acknowledged them.
CREATE TABLE oncely.outbox (
  -- Insertion order: the relay sends the rows of one (topic, key) in this order.
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- Fixed at insert and never changed, so every re-send carries the same message-id header and a
  -- downstream oncely consumer classifies it `republish`.
  message_id   text NOT NULL UNIQUE CHECK (char_length(message_id) BETWEEN 1 AND 255),
  topic        text NOT NULL CHECK (char_length(topic) BETWEEN 1 AND 249),
  -- NULL: the producer's partitioner decides (by key). Set for dead letters (their source partition).
  partition    integer CHECK (partition >= 0),
  key          bytea,
  value        bytea,
  -- [{ "key": name, "value": text, "encoding": "utf8" | "base64" }, …], message-id etc. included.
  headers      jsonb NOT NULL DEFAULT '[]',
  -- The inbound message id this event was published for (NULL outside a consumer).
  causation_id text,
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'parked', 'discarded')),
  attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_error   jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  sent_at      timestamptz
);

-- The relay's scan: pending rows in insertion order.
CREATE INDEX outbox_pending_idx ON oncely.outbox (id) WHERE status = 'pending';
-- "Is an earlier row of this (topic, key) parked?": rows behind a parked one wait (order per key).
CREATE INDEX outbox_parked_idx ON oncely.outbox (topic, key, id) WHERE status = 'parked';
-- Retention purges sent rows by age.
CREATE INDEX outbox_sent_at_idx ON oncely.outbox (sent_at) WHERE status = 'sent';

-- Wakes the relay (LISTEN oncely_outbox). NOTIFY is delivered at COMMIT and never for a
-- transaction that rolled back; once per statement, and PostgreSQL folds identical notifications
-- of one transaction into one.
CREATE FUNCTION oncely.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('oncely_outbox', '');
  RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON oncely.outbox
  FOR EACH STATEMENT EXECUTE FUNCTION oncely.outbox_notify();
