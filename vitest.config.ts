import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

const src = (path: string): string => fileURLToPath(new URL(`./src/${path}`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests and examples import the package by its public name, as users do.
    alias: [
      { find: /^oncely\/dev$/, replacement: src('dev/index.ts') },
      { find: /^oncely\/testing$/, replacement: src('testing/index.ts') },
      { find: /^oncely\/express$/, replacement: src('http/express.ts') },
      { find: /^oncely\/fastify$/, replacement: src('http/fastify.ts') },
      { find: /^oncely\/console$/, replacement: src('console/index.ts') },
      { find: /^oncely$/, replacement: src('index.ts') },
    ],
  },
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // Fast and I/O-free: runs first.
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          // The examples' own tests run here too: they need the same real services.
          include: ['test/integration/**/*.test.ts', 'examples/**/*.test.ts'],
          sequence: { groupOrder: 1 },
          // One Kafka broker and one PostgreSQL for the whole run; each test file gets its own
          // database and each test its own topics and group.
          globalSetup: ['test/support/global-setup.ts'],
          // A file that leaves a consumer, a pool or a broker connection open fails.
          setupFiles: ['test/support/leak-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          // Two cores: two files at a time keeps the broker responsive.
          maxWorkers: 2,
        },
      },
    ],
  },
});
