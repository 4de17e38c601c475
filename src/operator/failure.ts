/**
 * A failure as one line that says what happened and how to fix it: what every `oncely` command
 * prints on stderr and what the console shows on its page. No stack, no SQL.
 */

/** kafkajs errors that mean no broker answered (any copy of kafkajs: recognised by name). */
const KAFKA_UNREACHABLE = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
]);

/** Socket errors of a connection that never got a server's answer. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ECONNRESET',
]);

const DATABASE_FIX = 'check --database-url / DATABASE_URL and that PostgreSQL accepts connections from here';

/** How to fix what PostgreSQL refused, by SQLSTATE. */
function databaseFix(sqlState: string): string {
  if (sqlState === '3D000') return 'check the database name in --database-url / DATABASE_URL';
  if (sqlState.startsWith('28')) return 'check the user name and password in --database-url / DATABASE_URL';
  if (sqlState === '42P01' || sqlState === '3F000') return 'run `oncely migrate` against this database first';
  if (sqlState === '42501') return 'grant the database user usage of schema oncely and its tables';
  return 'see the PostgreSQL error above';
}

/**
 * A failed command as one line for stderr: what happened and how to fix it. oncely's own errors
 * already say both; a kafkajs or pg error that reached the command gets the fix here (recognised by
 * shape, as everywhere: any copy of those libraries).
 */
export function failureLine(error: unknown): string {
  const chain: unknown[] = [];
  for (let e = error; typeof e === 'object' && e !== null && chain.length < 6; e = (e as { cause?: unknown }).cause) {
    chain.push(e);
  }
  const fields = (e: unknown) => e as { name?: unknown; message?: unknown; code?: unknown; type?: unknown };
  const text = (e: unknown): string => {
    const { message } = fields(e);
    return (typeof message === 'string' ? message : String(e)).replaceAll(/\s*\n\s*/g, ' ').trim();
  };
  const outer = fields(error);
  if (typeof outer.code === 'string' && outer.code.startsWith('ONCELY_')) {
    return `oncely: ${text(error)} (${outer.code})`;
  }
  const kafka = chain.filter((e) => typeof fields(e).name === 'string' && String(fields(e).name).startsWith('KafkaJS'));
  if (kafka.length > 0) {
    const innermost = kafka.at(-1);
    if (kafka.some((e) => KAFKA_UNREACHABLE.has(String(fields(e).name)))) {
      return `oncely: cannot reach Kafka (${text(innermost)}): check --brokers / KAFKA_BROKERS and that the brokers are reachable from here`;
    }
    if (kafka.some((e) => fields(e).type === 'UNKNOWN_TOPIC_OR_PARTITION')) {
      return `oncely: ${text(innermost)}: check --topic (the topic does not exist) and that --brokers / KAFKA_BROKERS name the right cluster`;
    }
    return `oncely: Kafka refused the request (${text(innermost)}): check the brokers' ACLs for this group and topic`;
  }
  const server = chain.find((e) => 'severity' in (e as object) && typeof fields(e).code === 'string');
  if (server !== undefined) {
    return `oncely: PostgreSQL: ${text(server)} (SQLSTATE ${String(fields(server).code)}): ${databaseFix(String(fields(server).code))}`;
  }
  const socket = chain.find((e) => typeof fields(e).code === 'string' && UNREACHABLE_CODES.has(String(fields(e).code)));
  if (socket !== undefined) return `oncely: cannot reach PostgreSQL (${text(socket)}): ${DATABASE_FIX}`;
  return `oncely: ${text(error)}`;
}
