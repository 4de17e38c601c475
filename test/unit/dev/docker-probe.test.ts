/**
 * The Docker path of startDevServices() cannot run on the machines oncely is built on (they have
 * no Docker engine). What can be tested is the detection that chooses it and the fallback when it
 * fails: a real probe against an engine address that refuses connections must answer "no Docker"
 * quickly, and the plan must then choose the local processes.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { probeDocker } from '../../../src/dev/probe.js';
import { planDevServices } from '../../../src/dev/select.js';

describe('the Docker probe', () => {
  // testcontainers reads DOCKER_HOST from process.env once per process, at its first probe.
  beforeAll(() => {
    vi.stubEnv('DOCKER_HOST', 'tcp://127.0.0.1:1');
  });
  afterAll(() => {
    vi.unstubAllEnvs();
  });

  it('answers "no Docker" within seconds when the engine address refuses connections', async () => {
    const started = Date.now();
    const result = await probeDocker();
    expect(result.dockerAvailable).toBe(false);
    expect(result.reason).toMatch(/Could not find a working container runtime strategy/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('falls back to a local broker and local PostgreSQL when no Docker engine answers', async () => {
    const { dockerAvailable } = await probeDocker();
    const plan = planDevServices({
      env: {},
      dockerAvailable,
      testcontainers: { kafka: true, postgres: true },
      javaPath: '/usr/bin/java',
      mavenPath: undefined,
      jarsCached: true,
      pgBinDir: '/usr/lib/postgresql/15/bin',
    });
    expect(plan.kafka.source).toBe('local');
    expect(plan.postgres.source).toBe('local');
  });

  it('gives up on an engine that never answers after its deadline', async () => {
    const started = Date.now();
    const result = await probeDocker(200, async () => ({
      getContainerRuntimeClient: () => new Promise<never>(() => undefined),
    }));
    expect(result).toEqual({ dockerAvailable: false, reason: 'no answer from the container runtime within 200 ms' });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('answers "no Docker" when testcontainers is not installed', async () => {
    const result = await probeDocker(1_000, () => Promise.reject(new Error("Cannot find package 'testcontainers'")));
    expect(result).toEqual({ dockerAvailable: false, reason: 'the testcontainers package is not installed' });
  });
});
