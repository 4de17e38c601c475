import pg from 'pg';

import { readGroupStatus } from '../inbox/status.js';
import { loadMigrations, migrate, migrationStatus } from '../migrate/migrate.js';
import { outboxCounts } from '../outbox/store.js';
import { formatReplayStatus, replayStatus } from '../replay/cli.js';

export async function runMigrate(options: { databaseUrl: string; dryRun?: boolean }): Promise<void> {
  if (options.dryRun === true) {
    const { pending } = await migrationStatus(options.databaseUrl);
    const files = new Map((await loadMigrations()).map((m) => [m.id, m]));
    if (pending.length === 0) {
      process.stdout.write('-- nothing to apply: the oncely schema is current\n');
      return;
    }
    for (const { id, name } of pending) {
      process.stdout.write(
        `-- ${name}\nBEGIN;\n${files.get(id)?.sql.trim() ?? ''}\nINSERT INTO oncely.migrations (id, name) VALUES (${id}, '${name}');\nCOMMIT;\n\n`,
      );
    }
    process.stdout.write(
      '-- migrate() also creates schema oncely and table oncely.migrations first, under an advisory lock.\n',
    );
    return;
  }
  const { applied } = await migrate(options.databaseUrl);
  process.stdout.write(
    applied.length === 0 ? 'The oncely schema is current; nothing to apply.\n' : `Applied ${applied.join(', ')}.\n`,
  );
}

export async function runStatus(options: { databaseUrl: string; json?: boolean }): Promise<void> {
  const migrations = await migrationStatus(options.databaseUrl);
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 3 });
  try {
    const groups = migrations.pending.length === 0 || migrations.applied.length > 0 ? await readGroupStatus(pool) : [];
    // Absent before migration 0003: then there is no outbox to report.
    const outbox = await outboxCounts(pool).catch(() => undefined);
    // Replays' progress, once the replay migration is applied.
    const replays = migrations.applied.some((m) => m.name === '0006_retention') ? await replayStatus(pool) : [];
    if (options.json === true) {
      process.stdout.write(`${JSON.stringify({ migrations, groups, outbox, replays }, null, 2)}\n`);
      return;
    }
    const lines = [
      `Migrations: ${migrations.applied.length} applied, ${migrations.pending.length} pending` +
        (migrations.pending.length > 0
          ? ` (${migrations.pending.map((m) => m.name).join(', ')}; run \`oncely migrate\`)`
          : ''),
    ];
    if (outbox !== undefined) {
      lines.push(
        `Outbox: ${outbox.pending} pending, ${outbox.parked} parked, ${outbox.sent} sent, ${outbox.discarded} discarded` +
          (outbox.parked > 0 ? ' (see `oncely outbox list`)' : ''),
      );
    }
    if (groups.length === 0) lines.push('No consumer group has recorded anything yet.');
    for (const group of groups) {
      lines.push(
        '',
        `Group ${group.groupId} · topic ${group.topic}`,
        `  processed ${group.processed} · dead letters ${group.deadLetters.total} ` +
          `(open ${group.deadLetters.open}, retried ${group.deadLetters.retried}, discarded ${group.deadLetters.discarded})`,
        ...group.partitions.map(
          (p) => `  partition ${p.partition}: next offset ${p.nextOffset} (updated ${p.updatedAt.toISOString()})`,
        ),
      );
    }
    lines.push(...formatReplayStatus(replays));
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await pool.end();
  }
}
