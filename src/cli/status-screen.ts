import { createKafkaClient } from '../kafka/client.js';
import pg from 'pg';

import { readStatusReport, type StatusReport } from '../console/status.js';
import { formatReplayStatus } from './replay.js';
import { colours } from './output.js';

export interface StatusOptions {
  readonly databaseUrl: string;
  readonly brokers?: string;
  readonly json?: boolean;
  /** Refresh every this many seconds (true: 5) on a terminal, until Ctrl-C. */
  readonly watch?: boolean | string;
}

/**
 * `oncely status`: the migrations, then one screen per consumer group: what it recorded per topic,
 * its open dead letters by reason and, with brokers, its state in Kafka and lag per partition.
 * `--watch` redraws it on a terminal; `--json` prints it for scripts.
 */
export async function runStatusScreen(options: StatusOptions): Promise<void> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 3 });
  pool.on('error', () => undefined);
  const kafka =
    options.brokers === undefined || options.brokers === ''
      ? undefined
      : createKafkaClient({
          clientId: 'oncely-status',
          brokers: options.brokers,
          connectionTimeoutMs: 3_000,
          retries: 1,
        });
  const admin = kafka?.admin();
  try {
    await admin?.connect();
    const intervalS = options.watch === true ? 5 : Number(options.watch ?? 0);
    const watching = intervalS > 0 && options.json !== true && process.stdout.isTTY === true;
    for (;;) {
      const report = await readStatusReport(pool, admin);
      if (options.json === true) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return;
      }
      const screen = render(report);
      // Clear the terminal and draw again: one screen, refreshed in place.
      process.stdout.write(
        watching ? `\u001b[2J\u001b[H${screen}\n(refreshing every ${intervalS} s; Ctrl-C ends)\n` : `${screen}\n`,
      );
      if (!watching) return;
      await new Promise((resolve) => setTimeout(resolve, intervalS * 1000));
    }
  } finally {
    await admin?.disconnect().catch(() => undefined);
    await pool.end();
  }
}

function render(report: StatusReport): string {
  const c = colours();
  const { migrations } = report;
  const lines = [
    `Migrations: ${migrations.applied.length} applied, ${migrations.pending.length} pending` +
      (migrations.pending.length > 0
        ? ` (${migrations.pending.map((m) => m.name).join(', ')}; run \`oncely migrate\`)`
        : ''),
  ];
  if (report.groups.length === 0) lines.push('No consumer group has recorded anything yet.');
  for (const group of report.groups) {
    const totalLag = group.lag?.reduce((sum, p) => sum + p.lag, 0);
    lines.push(
      '',
      c.bold(`Group ${group.groupId}`) +
        (group.state === undefined ? '' : ` · ${group.state}`) +
        (totalLag === undefined ? ' · lag unknown (pass --brokers)' : ` · lag ${totalLag}`),
    );
    for (const topic of group.topics) {
      const letters = topic.deadLetters;
      // One count of dead letters, from oncely.dead_letters, by status.
      lines.push(
        `  ${topic.topic}: processed ${topic.processed} · dead letters ${letters.total} ` +
          `(open ${letters.open}, retried ${letters.retried}, discarded ${letters.discarded})`,
      );
      for (const p of topic.partitions) {
        const lag = group.lag?.find((l) => l.topic === topic.topic && l.partition === p.partition);
        lines.push(
          `    partition ${p.partition}: next offset ${p.nextOffset}` +
            (lag === undefined ? '' : `, log end ${lag.logEnd}, lag ${lag.lag}`) +
            ` (updated ${p.updatedAt.toISOString()})`,
        );
      }
      const recorded = new Set(topic.partitions.map((p) => p.partition));
      for (const lag of group.lag ?? []) {
        if (lag.topic !== topic.topic || recorded.has(lag.partition)) continue;
        lines.push(`    partition ${lag.partition}: nothing recorded yet, log end ${lag.logEnd}, lag ${lag.lag}`);
      }
    }
    const open = group.deadLettersOpen.reduce((sum, row) => sum + row.open, 0);
    lines.push(
      open === 0
        ? `  dead letters: none open`
        : c.yellow(
            `  dead letters: ${open} open (${group.deadLettersOpen.map((r) => `${r.topic} ${r.reason}: ${r.open}`).join(', ')})`,
          ),
    );
  }
  const { outbox } = report;
  if (outbox !== undefined) {
    const line = `Outbox: ${outbox.pending} pending, ${outbox.parked} parked, ${outbox.sent} sent, ${outbox.discarded} discarded`;
    lines.push('', outbox.parked > 0 ? c.yellow(`${line} (see \`oncely outbox list\`)`) : line);
  }
  lines.push(...formatReplayStatus(report.replays ?? []));
  return lines.join('\n');
}
