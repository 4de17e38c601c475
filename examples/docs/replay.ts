import { Kafka } from 'kafkajs';
import pg from 'pg';
import { formatReplayPlan, planReplay, runReplay } from 'oncely';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const kafka = new Kafka({ clientId: 'ops', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') });
const plan = await planReplay({
  pool,
  kafka,
  groupId: 'ledger',
  topic: 'payments',
  from: new Date('2026-11-30T00:00:00Z'),
});
console.log(formatReplayPlan(plan));
if (plan.totals.atRisk === 0) {
  const { replayId } = await runReplay({
    pool,
    kafka,
    groupId: 'ledger',
    topic: 'payments',
    from: new Date('2026-11-30T00:00:00Z'),
  });
  console.log(`replay ${replayId} recorded`);
}
await pool.end();
