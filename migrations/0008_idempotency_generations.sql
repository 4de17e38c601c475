-- Generations of HTTP idempotency keys (README: "Idempotent HTTP endpoints", DESIGN §3a
-- "Generations", G7, G9).
--
-- A key's row is now written at its first use, in a short transaction committed before the request's
-- own: status `in_progress`, with the request's fingerprint, so the key is bound to its parameters
-- before any step calls a provider or any event is published (another request with the key is 422
-- even when the first attempt never finished). The request's transaction stores the response in the
-- same row (`completed`). A key used again after it expired starts a new generation: steps and
-- event ids hang off the generation, so the new one calls the provider again with a new key and
-- publishes under new ids.

-- Generations are numbered from one sequence for every key, never per key: a key purged and then
-- reused must never get a number it had before, or its steps' provider keys would repeat.
CREATE SEQUENCE oncely.idempotency_generation_seq AS bigint;

-- Existing rows (all completed: earlier versions wrote only finished responses) each get a number
-- from the sequence; this rewrites the table once.
ALTER TABLE oncely.idempotency_keys
  ADD COLUMN generation bigint NOT NULL DEFAULT nextval('oncely.idempotency_generation_seq') CHECK (generation > 0),
  ADD COLUMN status text NOT NULL DEFAULT 'completed' CHECK (status IN ('in_progress', 'completed')),
  ALTER COLUMN response_status DROP NOT NULL,
  ALTER COLUMN response_body DROP NOT NULL,
  -- A completed row always has its response; an in-progress one has none yet.
  ADD CONSTRAINT idempotency_keys_response_check
    CHECK (status = 'in_progress' OR (response_status IS NOT NULL AND response_body IS NOT NULL));

ALTER SEQUENCE oncely.idempotency_generation_seq OWNED BY oncely.idempotency_keys.generation;

-- Steps belong to an owner's generation: 0 for a message (messages have none), the key's
-- generation for an HTTP request. Existing rows (messages, and HTTP steps of earlier versions)
-- get 0; the purge removes old ones by age.
ALTER TABLE oncely.steps
  ADD COLUMN generation bigint NOT NULL DEFAULT 0 CHECK (generation >= 0),
  DROP CONSTRAINT steps_pkey,
  ADD PRIMARY KEY (scope, owner_id, generation, name);
