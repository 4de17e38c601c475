import { Kafka } from 'kafkajs';
import { migrate } from 'oncely';
import pg from 'pg';

import { SHOP_DDL } from './tables.js';

// Run once per environment, and again after upgrading oncely: every step is safe to repeat.
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
await migrate(pool); // oncely's tables, in schema "oncely"
await pool.query(SHOP_DDL); // yours
await pool.end();

// oncely never creates topics: a consumer refuses to start without its topics
// (ONCELY_TOPIC_NOT_FOUND). In production your platform creates them (Terraform,
// kafka-topics.sh, the cloud console); here an admin client does.
const kafka = new Kafka({
  clientId: 'shop-setup',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(','),
});
const admin = kafka.admin();
await admin.connect();
await admin.createTopics({ topics: [{ topic: 'orders', numPartitions: 3 }], waitForLeaders: true });
await admin.disconnect();
console.log('database migrated, topic "orders" ready');
