/**
 * The one-time download of the Kafka jars, with a stand-in for Maven (a shell script that records
 * each call and writes a marker jar), so the locking and the atomic install are tested without the
 * network.
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { ensureKafkaJars } from '../../../src/dev/kafka-jars.js';

const logger = pino({ level: 'silent' });
const VERSION = '0.0.1';
let root: string;
let calls: string;

function fakeMaven(exitCode = 0): string {
  const script = path.join(root, `mvn-${exitCode}`);
  writeFileSync(
    script,
    `#!/bin/sh
echo "$$" >> "$FAKE_MVN_CALLS"
sleep 1
for arg in "$@"; do case "$arg" in -DoutputDirectory=*) out="\${arg#-DoutputDirectory=}";; esac; done
if [ ${exitCode} -ne 0 ]; then echo "[ERROR] Could not resolve dependencies (fake)"; exit ${exitCode}; fi
mkdir -p "$out" && echo jar > "$out/kafka_2.13-${VERSION}.jar"
`,
  );
  chmodSync(script, 0o755);
  return script;
}

const mavenCalls = (): number => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n').length : 0);

beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'oncely-jars-test-'));
  calls = path.join(root, 'calls');
  vi.stubEnv('FAKE_MVN_CALLS', calls);
});

afterEach(() => {
  vi.unstubAllEnvs();
  rmSync(root, { recursive: true, force: true });
});

describe('the Kafka jar cache', () => {
  it('runs Maven once when several starts find the jars missing at the same time', async () => {
    const cacheDir = path.join(root, 'cache');
    const mavenPath = fakeMaven();
    const results = await Promise.all(
      [1, 2, 3].map(() => ensureKafkaJars({ cacheDir, version: VERSION, mavenPath, logger })),
    );
    expect(mavenCalls()).toBe(1);
    expect(new Set(results)).toEqual(new Set([path.join(cacheDir, `kafka-${VERSION}`, 'libs')]));
    expect(existsSync(path.join(cacheDir, `kafka-${VERSION}`, 'libs', `kafka_2.13-${VERSION}.jar`))).toBe(true);
    // No staging directory and no lock left behind.
    expect(readdirSync(cacheDir)).toEqual([`kafka-${VERSION}`]);
  }, 30_000);

  it('does not run Maven at all once the jars are cached', async () => {
    const cacheDir = path.join(root, 'cache');
    await ensureKafkaJars({ cacheDir, version: VERSION, mavenPath: fakeMaven(), logger });
    const libs = await ensureKafkaJars({ cacheDir, version: VERSION, mavenPath: undefined, logger });
    expect(libs).toBe(path.join(cacheDir, `kafka-${VERSION}`, 'libs'));
    expect(mavenCalls()).toBe(1);
  }, 30_000);

  it('reports what Maven said when the download fails, and leaves nothing half-installed', async () => {
    const cacheDir = path.join(root, 'cache');
    const attempt = ensureKafkaJars({ cacheDir, version: VERSION, mavenPath: fakeMaven(1), logger });
    await expect(attempt).rejects.toHaveProperty('code', 'ONCELY_DEV_SERVICES_FAILED');
    await expect(attempt).rejects.toThrow('Could not resolve dependencies (fake)');
    expect(readdirSync(cacheDir)).toEqual([]);
  }, 30_000);
});
