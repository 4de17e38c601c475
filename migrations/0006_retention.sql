-- Retention and replay (README: "Replaying a topic").

-- Per partition, "the inbox is complete for offsets >= horizon_offset": a purge raises it, in the
-- same transaction as each delete batch, to the highest offset it deleted + 1. A replay of offsets
-- below it is at risk (their rows may be gone, so they could apply twice). Only ever raised.
CREATE TABLE oncely.inbox_horizons (
  consumer_group text NOT NULL,
  topic          text NOT NULL,
  partition      integer NOT NULL,
  horizon_offset bigint NOT NULL CHECK (horizon_offset >= 0),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
);

-- One audit row per replay run: who moved which group back over which range, and what the plan
-- said at the time. `ranges` holds, per partition, the first offset re-read and the range end,
-- which `oncely status` compares with the group's resume point to show progress.
CREATE TABLE oncely.replays (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  consumer_group text NOT NULL,
  topic          text NOT NULL,
  partitions     integer[] NOT NULL,
  range_from     text NOT NULL,
  range_to       text NOT NULL,
  -- [{ "partition": 0, "start": "12", "end": "40" }, …]: offsets, as strings (bigint).
  ranges         jsonb NOT NULL,
  report         jsonb NOT NULL,
  forced         boolean NOT NULL DEFAULT false,
  requested_by   text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  -- Set by `oncely status` once the group's resume point has passed the end of every range.
  completed_at   timestamptz
);

CREATE INDEX replays_group_idx ON oncely.replays (consumer_group, topic, created_at);
