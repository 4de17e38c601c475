/**
 * Which source provides Kafka and which provides PostgreSQL: a pure decision over probe results, so
 * every row of the table below is unit-tested without touching the machine.
 *
 * | service    | 1. env var set | 2. Docker engine + testcontainers module | 3. local tools                     |
 * |------------|----------------|------------------------------------------|------------------------------------|
 * | Kafka      | KAFKA_BROKERS  | @testcontainers/kafka                    | java + (cached jars or mvn)        |
 * | PostgreSQL | DATABASE_URL   | @testcontainers/postgresql               | initdb/pg_ctl/postgres bin dir     |
 *
 * The first row that applies wins, independently per service. When no row applies for either
 * service, one {@link OncelyError} `ONCELY_DEV_SERVICES_UNAVAILABLE` names every fix at once, so a
 * user does not fix Kafka only to be told about PostgreSQL on the next run.
 */
import { OncelyError, configError } from '../errors.js';

/** What the probes found. Every field is plain data, so tests can build any machine. */
export interface DevProbeResults {
  /** Only the two variables that select a source; empty strings count as unset. */
  readonly env: { readonly KAFKA_BROKERS?: string | undefined; readonly DATABASE_URL?: string | undefined };
  /** Whether a Docker (or compatible) engine answered testcontainers' runtime probe. */
  readonly dockerAvailable: boolean;
  /** Whether the optional testcontainers modules can be imported. */
  readonly testcontainers: { readonly kafka: boolean; readonly postgres: boolean };
  /** Absolute path of a `java` executable, if one was found. */
  readonly javaPath: string | undefined;
  /** Absolute path of an `mvn` executable, if one was found. */
  readonly mavenPath: string | undefined;
  /** Whether the Kafka jars for the requested version are already in the cache directory. */
  readonly jarsCached: boolean;
  /** A directory holding `initdb`, `pg_ctl` and `postgres`, if one was found. */
  readonly pgBinDir: string | undefined;
}

export type KafkaPlan =
  | { readonly source: 'env'; readonly brokers: string[] }
  | { readonly source: 'docker' }
  | {
      readonly source: 'local';
      readonly javaPath: string;
      /** Undefined when the jars are cached: a cached start never runs Maven. */
      readonly mavenPath: string | undefined;
      readonly jarsCached: boolean;
    };

export type PostgresPlan =
  | { readonly source: 'env'; readonly url: string }
  | { readonly source: 'docker' }
  | { readonly source: 'local'; readonly pgBinDir: string };

export interface DevServicesPlan {
  readonly kafka: KafkaPlan;
  readonly postgres: PostgresPlan;
}

/** An env value that is unset, empty or only whitespace means "not configured". */
export function configured(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === '' ? undefined : trimmed;
}

// host:port, where host is a name or IPv4 address. IPv6 literals are refused on purpose: kafkajs
// cannot parse them (kafkajs #1589), and failing here is clearer than failing inside kafkajs.
const BROKER_ADDRESS = /^[A-Za-z0-9._-]+:\d{1,5}$/;

/** Parses `KAFKA_BROKERS` (`host:port[,host:port…]`); throws `ONCELY_CONFIG` naming the bad entry. */
export function parseKafkaBrokers(value: string): string[] {
  const brokers = value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  for (const broker of brokers) {
    if (!BROKER_ADDRESS.test(broker)) {
      throw configError(
        'KAFKA_BROKERS',
        `"${broker}" is not host:port. Set KAFKA_BROKERS to a comma-separated list such as ` +
          '127.0.0.1:9092,127.0.0.1:9093 (use an IPv4 address or a name, not an IPv6 literal).',
      );
    }
  }
  return brokers;
}

function kafkaFix(probes: DevProbeResults): string {
  const local =
    probes.javaPath === undefined
      ? probes.jarsCached
        ? 'install Java 17+'
        : 'install Java 17+ and Apache Maven (Maven downloads the Kafka jars once)'
      : 'install Apache Maven (it downloads the Kafka jars once)';
  const docker =
    probes.dockerAvailable && !probes.testcontainers.kafka
      ? 'install @testcontainers/kafka (Docker is running)'
      : probes.testcontainers.kafka
        ? 'start Docker'
        : 'start Docker and install @testcontainers/kafka';
  return `${local}, or ${docker}, or set KAFKA_BROKERS=host:port`;
}

function postgresFix(probes: DevProbeResults): string {
  const docker =
    probes.dockerAvailable && !probes.testcontainers.postgres
      ? 'install @testcontainers/postgresql (Docker is running)'
      : probes.testcontainers.postgres
        ? 'start Docker'
        : 'start Docker and install @testcontainers/postgresql';
  return (
    'install the PostgreSQL server binaries (initdb, pg_ctl, postgres; set PG_BIN=<dir> if they are ' +
    `not found), or ${docker}, or set DATABASE_URL=postgres://user@host:port/database`
  );
}

/**
 * Decides the source of each service. Throws `ONCELY_DEV_SERVICES_UNAVAILABLE` when a service has
 * no source, with a message naming what to install or set; `ONCELY_CONFIG` for a malformed
 * `KAFKA_BROKERS`.
 */
export function planDevServices(probes: DevProbeResults): DevServicesPlan {
  const brokersEnv = configured(probes.env.KAFKA_BROKERS);
  const urlEnv = configured(probes.env.DATABASE_URL);

  let kafka: KafkaPlan | undefined;
  if (brokersEnv !== undefined) {
    kafka = { source: 'env', brokers: parseKafkaBrokers(brokersEnv) };
  } else if (probes.dockerAvailable && probes.testcontainers.kafka) {
    kafka = { source: 'docker' };
  } else if (probes.javaPath !== undefined && (probes.jarsCached || probes.mavenPath !== undefined)) {
    kafka = {
      source: 'local',
      javaPath: probes.javaPath,
      mavenPath: probes.jarsCached ? undefined : probes.mavenPath,
      jarsCached: probes.jarsCached,
    };
  }

  let postgres: PostgresPlan | undefined;
  if (urlEnv !== undefined) {
    postgres = { source: 'env', url: urlEnv };
  } else if (probes.dockerAvailable && probes.testcontainers.postgres) {
    postgres = { source: 'docker' };
  } else if (probes.pgBinDir !== undefined) {
    postgres = { source: 'local', pgBinDir: probes.pgBinDir };
  }

  if (kafka !== undefined && postgres !== undefined) return { kafka, postgres };

  const problems: string[] = [];
  const context: Record<string, string> = {};
  if (kafka === undefined) {
    context['kafka'] = kafkaFix(probes);
    problems.push(`No Kafka broker available: ${context['kafka']}.`);
  }
  if (postgres === undefined) {
    context['postgres'] = postgresFix(probes);
    problems.push(`No PostgreSQL server available: ${context['postgres']}.`);
  }
  throw new OncelyError('ONCELY_DEV_SERVICES_UNAVAILABLE', `startDevServices(): ${problems.join(' ')}`, {
    context,
  });
}
