import pg from 'pg';
import type { TestProject } from 'vitest/node';

import { startDevServices } from '../../src/dev/index.js';
import { migrate } from '../../src/migrate/migrate.js';
import { databaseUrlFor, TEST_BROKER_PROPERTIES, TEST_SCHEMA_SQL } from './settings.js';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string[];
    databaseUrl: string;
    templateDatabase: string;
  }
}

/**
 * Starts one real Kafka broker and one real PostgreSQL for the integration run (or uses
 * KAFKA_BROKERS / DATABASE_URL), and prepares a template database with oncely's migrations and
 * the tests' own tables, from which every test file clones its own database.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const services = await startDevServices({ kafka: { brokerProperties: TEST_BROKER_PROPERTIES } });
  const template = `oncely_template_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: services.postgres.url });
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${template}`);
    await migrate(databaseUrlFor(services.postgres.url, template));
    const client = new pg.Client({ connectionString: databaseUrlFor(services.postgres.url, template) });
    await client.connect();
    await client.query(TEST_SCHEMA_SQL);
    await client.end();
  } catch (error) {
    await admin.end().catch(() => undefined);
    await services.stop();
    throw error;
  }

  // Code that starts its own dev services in a test (the examples do, as a user's tests would)
  // finds these and reuses this run's broker and server instead of starting more.
  process.env.KAFKA_BROKERS ??= services.kafka.brokers.join(',');
  process.env.DATABASE_URL ??= services.postgres.url;
  project.provide('kafkaBrokers', services.kafka.brokers);
  project.provide('databaseUrl', services.postgres.url);
  project.provide('templateDatabase', template);

  return async () => {
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
      await admin.end();
    } finally {
      await services.stop();
    }
  };
}
