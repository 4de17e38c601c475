-- Topic identity (README: "Offsets that disagree"): a resume point carries what recognises its log.
-- With each partition's next offset, the record just before it (next_offset - 1): its payload
-- fingerprint (SHA-256 of the value) and its Kafka timestamp (milliseconds since the epoch),
-- written by the same statement that records the offset. On assignment the consumer fetches that
-- record and compares: a topic deleted and re-created has other records there, whatever its
-- length, and the partition pauses with partition:offsets-mismatch instead of skipping.
-- Null in rows written before this migration (and after a reset to an offset with no record
-- before it): the consumer then skips the check, says so, and fills them in as it records.
ALTER TABLE oncely.offsets
  ADD COLUMN previous_payload_hash bytea CHECK (octet_length(previous_payload_hash) = 32),
  ADD COLUMN previous_timestamp    bigint;
