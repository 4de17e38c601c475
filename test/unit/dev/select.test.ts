import { describe, expect, it } from 'vitest';

import { hasErrorCode, type OncelyError } from '../../../src/errors.js';
import { parseKafkaBrokers, planDevServices, type DevProbeResults } from '../../../src/dev/select.js';

/** A machine with nothing on it; each test adds what its row needs. */
function machine(overrides: Partial<DevProbeResults> = {}): DevProbeResults {
  return {
    env: {},
    dockerAvailable: false,
    testcontainers: { kafka: false, postgres: false },
    javaPath: undefined,
    mavenPath: undefined,
    jarsCached: false,
    pgBinDir: undefined,
    ...overrides,
  };
}

const everything = machine({
  dockerAvailable: true,
  testcontainers: { kafka: true, postgres: true },
  javaPath: '/usr/bin/java',
  mavenPath: '/usr/bin/mvn',
  jarsCached: true,
  pgBinDir: '/usr/lib/postgresql/15/bin',
});

function unavailable(probes: DevProbeResults): OncelyError {
  try {
    planDevServices(probes);
  } catch (error) {
    if (hasErrorCode(error, 'ONCELY_DEV_SERVICES_UNAVAILABLE')) return error;
    throw error;
  }
  throw new Error('expected ONCELY_DEV_SERVICES_UNAVAILABLE');
}

describe('planDevServices', () => {
  describe('Kafka', () => {
    it('uses KAFKA_BROKERS when set, even when Docker and local tools are available', () => {
      const plan = planDevServices({ ...everything, env: { KAFKA_BROKERS: 'a:9092, b:9093' } });
      expect(plan.kafka).toEqual({ source: 'env', brokers: ['a:9092', 'b:9093'] });
    });

    it('treats an empty or blank KAFKA_BROKERS as unset', () => {
      expect(planDevServices({ ...everything, env: { KAFKA_BROKERS: '' } }).kafka.source).toBe('docker');
      expect(planDevServices({ ...everything, env: { KAFKA_BROKERS: '  ' } }).kafka.source).toBe('docker');
    });

    it('uses Docker when an engine answers and @testcontainers/kafka is installed', () => {
      expect(planDevServices(everything).kafka).toEqual({ source: 'docker' });
    });

    it('falls back to a local broker when no Docker engine answers', () => {
      const plan = planDevServices({ ...everything, dockerAvailable: false });
      expect(plan.kafka).toEqual({
        source: 'local',
        javaPath: '/usr/bin/java',
        mavenPath: undefined,
        jarsCached: true,
      });
    });

    it('falls back to a local broker when Docker answers but @testcontainers/kafka is missing', () => {
      const plan = planDevServices({ ...everything, testcontainers: { kafka: false, postgres: true } });
      expect(plan.kafka.source).toBe('local');
      expect(plan.postgres.source).toBe('docker');
    });

    it('plans a Maven download when the jars are not cached', () => {
      const plan = planDevServices({ ...everything, dockerAvailable: false, jarsCached: false });
      expect(plan.kafka).toEqual({
        source: 'local',
        javaPath: '/usr/bin/java',
        mavenPath: '/usr/bin/mvn',
        jarsCached: false,
      });
    });

    it('needs no Maven once the jars are cached', () => {
      const plan = planDevServices({ ...everything, dockerAvailable: false, mavenPath: undefined, jarsCached: true });
      expect(plan.kafka).toMatchObject({ source: 'local', mavenPath: undefined });
    });

    it('asks for Java and Maven when neither is installed', () => {
      const error = unavailable({
        ...everything,
        dockerAvailable: false,
        javaPath: undefined,
        mavenPath: undefined,
        jarsCached: false,
      });
      expect(error.message).toContain(
        'No Kafka broker available: install Java 17+ and Apache Maven (Maven downloads the Kafka jars once), ' +
          'or start Docker, or set KAFKA_BROKERS=host:port.',
      );
      expect(error.message).not.toContain('PostgreSQL');
    });

    it('asks only for Java when the jars are cached', () => {
      const error = unavailable({ ...everything, dockerAvailable: false, javaPath: undefined, jarsCached: true });
      expect(error.message).toContain('No Kafka broker available: install Java 17+, or start Docker');
    });

    it('asks for Maven when Java is installed but the jars are not cached', () => {
      const error = unavailable({ ...everything, dockerAvailable: false, mavenPath: undefined, jarsCached: false });
      expect(error.message).toContain('install Apache Maven (it downloads the Kafka jars once), or start Docker');
    });

    it('names @testcontainers/kafka when Docker runs without it', () => {
      const error = unavailable({
        ...machine(),
        dockerAvailable: true,
        testcontainers: { kafka: false, postgres: true },
      });
      expect(error.message).toContain(
        'or install @testcontainers/kafka (Docker is running), or set KAFKA_BROKERS=host:port',
      );
    });

    it('names both Docker and @testcontainers/kafka when neither is there', () => {
      const error = unavailable(machine({ pgBinDir: '/pg' }));
      expect(error.message).toContain('or start Docker and install @testcontainers/kafka, or set KAFKA_BROKERS');
    });

    it('refuses a KAFKA_BROKERS entry that is not host:port, naming the variable', () => {
      expect(() => planDevServices({ ...everything, env: { KAFKA_BROKERS: '127.0.0.1' } })).toThrow(
        /Invalid option `KAFKA_BROKERS`: "127.0.0.1" is not host:port/,
      );
    });
  });

  describe('PostgreSQL', () => {
    it('uses DATABASE_URL when set, even when Docker and local binaries are available', () => {
      const plan = planDevServices({ ...everything, env: { DATABASE_URL: 'postgres://u@db:5432/app' } });
      expect(plan.postgres).toEqual({ source: 'env', url: 'postgres://u@db:5432/app' });
    });

    it('treats an empty DATABASE_URL as unset', () => {
      expect(planDevServices({ ...everything, env: { DATABASE_URL: '' } }).postgres.source).toBe('docker');
    });

    it('uses Docker when an engine answers and @testcontainers/postgresql is installed', () => {
      expect(planDevServices(everything).postgres).toEqual({ source: 'docker' });
    });

    it('falls back to local binaries when no Docker engine answers', () => {
      const plan = planDevServices({ ...everything, dockerAvailable: false });
      expect(plan.postgres).toEqual({ source: 'local', pgBinDir: '/usr/lib/postgresql/15/bin' });
    });

    it('falls back to local binaries when Docker answers but @testcontainers/postgresql is missing', () => {
      const plan = planDevServices({ ...everything, testcontainers: { kafka: true, postgres: false } });
      expect(plan.postgres.source).toBe('local');
    });

    it('asks for the PostgreSQL binaries, Docker or DATABASE_URL when none is there', () => {
      const error = unavailable({ ...everything, dockerAvailable: false, pgBinDir: undefined });
      expect(error.message).toContain(
        'No PostgreSQL server available: install the PostgreSQL server binaries (initdb, pg_ctl, postgres; ' +
          'set PG_BIN=<dir> if they are not found), or start Docker, or set DATABASE_URL=postgres://user@host:port/database.',
      );
      expect(error.message).not.toContain('Kafka broker');
    });

    it('names @testcontainers/postgresql when Docker runs without it', () => {
      const error = unavailable({
        ...everything,
        testcontainers: { kafka: true, postgres: false },
        pgBinDir: undefined,
      });
      expect(error.message).toContain('or install @testcontainers/postgresql (Docker is running)');
    });
  });

  it('selects each service independently', () => {
    const plan = planDevServices({
      ...everything,
      dockerAvailable: false,
      env: { DATABASE_URL: 'postgres://x@h:1/d' },
    });
    expect(plan.kafka.source).toBe('local');
    expect(plan.postgres.source).toBe('env');
  });

  it('starts nothing and probes nothing it needs when both variables are set', () => {
    const plan = planDevServices(machine({ env: { KAFKA_BROKERS: 'k:9092', DATABASE_URL: 'postgres://p/d' } }));
    expect(plan).toEqual({
      kafka: { source: 'env', brokers: ['k:9092'] },
      postgres: { source: 'env', url: 'postgres://p/d' },
    });
  });

  it('throws one error naming the fixes for both services when neither can be provided', () => {
    const error = unavailable(machine());
    expect(error.code).toBe('ONCELY_DEV_SERVICES_UNAVAILABLE');
    expect(error.message).toMatch(
      /^startDevServices\(\): No Kafka broker available: .+\. No PostgreSQL server available: .+\.$/,
    );
    expect(error.context['kafka']).toContain('KAFKA_BROKERS=host:port');
    expect(error.context['postgres']).toContain('DATABASE_URL=');
  });
});

describe('parseKafkaBrokers', () => {
  it('splits, trims and drops empty entries', () => {
    expect(parseKafkaBrokers(' 127.0.0.1:9092 ,,kafka-1.internal:19092,')).toEqual([
      '127.0.0.1:9092',
      'kafka-1.internal:19092',
    ]);
  });

  it('refuses IPv6 literals, which kafkajs cannot parse', () => {
    expect(() => parseKafkaBrokers('[::1]:9092')).toThrow(/not host:port/);
  });
});
