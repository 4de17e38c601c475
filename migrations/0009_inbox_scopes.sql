-- One keyspace (README: "Message identity" and "Replaying a topic"). Everything that decides "was
-- this applied" is keyed by the inbox scope: the `consumer_group` column of inbox, dead_letters and
-- inbox_horizons holds the scope (the group id unless the consumer sets `inboxScope`). Kafka
-- offsets, `oncely.offsets` and `oncely.replays.consumer_group` stay per group.

-- Which scope each group claims in, and the topics it consumes: written by the consumer at every
-- start. Replay, purge and retention are asked about a group and find its scope here; a purge of a
-- scope is bounded by the positions of every group recorded as reading it.
CREATE TABLE oncely.group_scopes (
  consumer_group text PRIMARY KEY,
  inbox_scope    text NOT NULL,
  topics         text[] NOT NULL DEFAULT '{}',
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX group_scopes_scope_idx ON oncely.group_scopes (inbox_scope);

-- When a purge last deleted inbox rows of the partition, by PostgreSQL's clock, read after the rows
-- were deleted. A replay counts at risk every message not in the inbox whose record timestamp is
-- at or before the latest of these in its scope: a copy written before that moment may be a copy of
-- an id whose row the purge removed, wherever that copy sits in the log. Rows that predate this
-- column were last raised at updated_at.
ALTER TABLE oncely.inbox_horizons ADD COLUMN purged_at timestamptz;
UPDATE oncely.inbox_horizons SET purged_at = updated_at;
ALTER TABLE oncely.inbox_horizons ALTER COLUMN purged_at SET NOT NULL;
ALTER TABLE oncely.inbox_horizons ALTER COLUMN purged_at SET DEFAULT now();

-- The scope a replay looked its messages up in (and `oncely status` counts its progress in).
-- Null on audit rows written before: their scope was the group.
ALTER TABLE oncely.replays ADD COLUMN inbox_scope text;
