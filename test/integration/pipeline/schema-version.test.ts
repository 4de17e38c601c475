import { describe, expect, it } from 'vitest';

import { effectHandler, useTestEnvironment } from '../../support/integration.js';

const env = useTestEnvironment();

describe('a database migrated by a newer oncely', () => {
  it('is refused at start() with ONCELY_SCHEMA_TOO_NEW instead of passing silently', async () => {
    const topic = await env.createTopic('schema-too-new');
    // What a newer oncely leaves behind: a migration this one does not know.
    await env.pool.query("INSERT INTO oncely.migrations (id, name) VALUES (9999, '9999_from_the_future')");
    try {
      const consumer = env.consumer({ groupId: env.groupId('schema-too-new'), handlers: [effectHandler(topic)] });
      await expect(consumer.start()).rejects.toMatchObject({
        code: 'ONCELY_SCHEMA_TOO_NEW',
        context: { current: 9999 },
      });
    } finally {
      await env.pool.query('DELETE FROM oncely.migrations WHERE id = 9999');
    }
  });
});
