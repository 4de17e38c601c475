-- The operator console's audit log (README/docs: "Console"). Every write made through the console
-- (a dead letter retried or discarded, a replay run, an outbox event retried or discarded, a
-- partition resumed) is recorded here: who, what, when, from where, and how it ended.
--
-- The row is written before the action runs and completed after it, so an action whose row could
-- not be written never runs, and one that crashed half-way is still on record (outcome null).
CREATE TABLE oncely.console_audit (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- Who: the name the host app's auth gave, or the name given at sign-in with the console token.
  actor          text NOT NULL,
  -- How they were let in: 'token' or 'host' (the host application's own auth).
  auth           text NOT NULL CHECK (auth IN ('token', 'host')),
  remote_address text,
  -- What: e.g. 'dead-letters.retry', and on what (ids, group, topic, range) as JSON.
  action         text NOT NULL,
  target         jsonb NOT NULL DEFAULT '{}',
  -- How it ended: 'done', 'refused' or 'failed', with the one-line result; null while it runs.
  outcome        text CHECK (outcome IN ('done', 'refused', 'failed')),
  result         text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz
);

CREATE INDEX console_audit_created_at_idx ON oncely.console_audit (created_at);
