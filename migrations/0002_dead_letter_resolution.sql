-- Why a dead letter was discarded, or how its retry went: shown by `oncely dead-letters show`.
ALTER TABLE oncely.dead_letters ADD COLUMN resolution text;

-- `oncely dead-letters list` filters by topic and reason within a group.
CREATE INDEX dead_letters_topic_idx ON oncely.dead_letters (consumer_group, topic, reason, created_at);

-- The record's Kafka timestamp, so a re-driven handler sees the message as it was.
ALTER TABLE oncely.dead_letters ADD COLUMN record_timestamp timestamptz;
