/**
 * What `oncely status` prints and the console's groups screen shows: one report, read once.
 */
import type pg from 'pg';

import { countOpenDeadLetters, type GroupStatus, type OpenDeadLetterCount, readGroupStatus } from '../inbox/status.js';
import type { KafkaAdmin } from '../kafka/client.js';
import { type PartitionLag, readConsumerLag } from '../kafka/lag.js';
import { migrationStatus, type MigrationStatus } from '../migrate/migrate.js';
import { type OutboxStatus, outboxCounts } from '../outbox/store.js';
import { replayStatus, type ReplayProgress } from '../replay/status.js';

export interface GroupScreen {
  readonly groupId: string;
  readonly state: string | undefined;
  readonly topics: readonly GroupStatus[];
  readonly deadLettersOpen: readonly OpenDeadLetterCount[];
  /** Undefined when no brokers were given. */
  readonly lag: readonly PartitionLag[] | undefined;
}

export interface StatusReport {
  readonly migrations: MigrationStatus;
  readonly groups: readonly GroupScreen[];
  /** Outbox rows by status; undefined before the outbox migration. */
  readonly outbox?: Record<OutboxStatus, number> | undefined;
  /** Replays and how far each has come (see `oncely replay`). */
  readonly replays?: readonly ReplayProgress[];
}

/** What `oncely status` shows (and the console's groups screen): without `admin`, no state and no lag. */
export async function readStatusReport(pool: pg.Pool, admin: KafkaAdmin | undefined): Promise<StatusReport> {
  const migrations = await migrationStatus(pool);
  if (migrations.applied.length === 0) return { migrations, groups: [] };
  const byGroup = new Map<string, GroupStatus[]>();
  for (const status of await readGroupStatus(pool)) {
    byGroup.set(status.groupId, [...(byGroup.get(status.groupId) ?? []), status]);
  }
  const groups: GroupScreen[] = [];
  for (const [groupId, topics] of byGroup) {
    const deadLettersOpen = await countOpenDeadLetters(pool, groupId);
    let state: string | undefined;
    let lag: PartitionLag[] | undefined;
    if (admin !== undefined) {
      state = (await admin.describeGroups([groupId])).groups[0]?.state;
      const existing = new Set(await admin.listTopics());
      lag = await readConsumerLag(
        admin,
        groupId,
        topics.map((t) => t.topic).filter((t) => existing.has(t)),
      );
    }
    groups.push({ groupId, state, topics, deadLettersOpen, lag });
  }
  const applied = new Set(migrations.applied.map((m) => m.name));
  const outbox = applied.has('0003_outbox') ? await outboxCounts(pool) : undefined;
  const replays = applied.has('0006_retention') ? await replayStatus(pool) : [];
  return { migrations, groups, outbox, replays };
}
