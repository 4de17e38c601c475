-- Steps: recovery points for external side effects (README: "Calling other services").
-- One row per completed step of one owner: a message (scope = consumer group, owner = message id)
-- or an HTTP request (scope = the route's scope, owner = its Idempotency-Key). Written in a short
-- transaction of its own as soon as the step's function returned, so it survives the handler's
-- rollback: a later attempt finds it and returns `result` instead of calling the function again.
CREATE TABLE oncely.steps (
  scope        text NOT NULL,
  owner_id     text NOT NULL,
  -- The user's step name, or `compensate:<name>` for a compensation, or `compensate:` for the
  -- marker written when compensation of the owner began (the owner is then never applied again).
  name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
  -- The function's JSON result (a failed compensation: the error it gave up with).
  result       jsonb NOT NULL,
  -- `completed`; `failed` only for a compensation that gave up after its retries.
  status       text NOT NULL DEFAULT 'completed' CHECK (status IN ('completed', 'failed')),
  -- Whether the step was given a `compensate` function: compensation can then tell "nothing to
  -- undo" from "its compensate function is not known to this process".
  compensable  boolean NOT NULL DEFAULT false,
  -- Completion order: compensation runs in reverse of it.
  seq          bigint GENERATED ALWAYS AS IDENTITY,
  completed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, owner_id, name)
);

-- Retention purges by age.
CREATE INDEX steps_completed_at_idx ON oncely.steps (completed_at);
