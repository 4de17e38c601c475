import path from 'node:path';
import { describe, expect, it } from 'vitest';

import {
  compareVersionNames,
  findJava,
  findMaven,
  findOnPath,
  findPgBinDir,
  kafkaMarkerJar,
  pgBinCandidates,
  resolveCacheDir,
  type DiscoveryFs,
} from '../../../src/dev/probe.js';

/** A fake file system: a set of executable files; directories are derived from them. */
function fakeFs(executables: string[]): DiscoveryFs & { asked: string[] } {
  const files = new Set(executables);
  const asked: string[] = [];
  return {
    asked,
    isExecutable: async (file) => {
      asked.push(file);
      return files.has(file);
    },
    listDir: async (dir) => {
      const prefix = dir.endsWith('/') ? dir : `${dir}/`;
      const names = new Set<string>();
      for (const file of files) if (file.startsWith(prefix)) names.add(file.slice(prefix.length).split('/')[0] ?? '');
      return [...names];
    },
  };
}

const pgBinaries = (dir: string): string[] => ['initdb', 'pg_ctl', 'postgres'].map((name) => `${dir}/${name}`);
const noPgConfig = async (): Promise<undefined> => undefined;

describe('PostgreSQL binary discovery', () => {
  it('tries PG_BIN, pg_config, /usr/lib/postgresql (newest first), /usr/local/pgsql, Homebrew, then PATH', async () => {
    const fs = fakeFs([
      ...pgBinaries('/usr/lib/postgresql/9.6/bin'),
      ...pgBinaries('/usr/lib/postgresql/16/bin'),
      ...pgBinaries('/usr/lib/postgresql/10/bin'),
      '/opt/pg/bin/initdb',
    ]);
    const candidates = await pgBinCandidates({
      env: { PG_BIN: '/custom/bin', PATH: ['/usr/bin', '/opt/pg/bin'].join(path.delimiter) },
      fs,
      pgConfigBindir: async () => '/from/pg_config',
    });
    expect(candidates).toEqual([
      '/custom/bin',
      '/from/pg_config',
      '/usr/lib/postgresql/16/bin',
      '/usr/lib/postgresql/10/bin',
      '/usr/lib/postgresql/9.6/bin',
      '/usr/local/pgsql/bin',
      '/opt/homebrew/bin',
      '/opt/pg/bin',
    ]);
  });

  it('prefers PG_BIN when it holds the binaries', async () => {
    const fs = fakeFs([...pgBinaries('/custom/bin'), ...pgBinaries('/usr/lib/postgresql/15/bin')]);
    expect(await findPgBinDir({ env: { PG_BIN: '/custom/bin' }, fs, pgConfigBindir: noPgConfig })).toBe('/custom/bin');
  });

  it('skips a candidate that lacks one of initdb, pg_ctl and postgres', async () => {
    // Client-only packages ship pg_config and psql but no server.
    const fs = fakeFs(['/from/pg_config/pg_ctl', ...pgBinaries('/usr/lib/postgresql/15/bin')]);
    const found = await findPgBinDir({ env: {}, fs, pgConfigBindir: async () => '/from/pg_config' });
    expect(found).toBe('/usr/lib/postgresql/15/bin');
  });

  it('picks the newest /usr/lib/postgresql version, comparing numerically', async () => {
    const fs = fakeFs([...pgBinaries('/usr/lib/postgresql/9.6/bin'), ...pgBinaries('/usr/lib/postgresql/15/bin')]);
    expect(await findPgBinDir({ env: {}, fs, pgConfigBindir: noPgConfig })).toBe('/usr/lib/postgresql/15/bin');
  });

  it('finds the binaries through PATH as a last resort', async () => {
    const fs = fakeFs(pgBinaries('/nix/store/pg/bin'));
    const found = await findPgBinDir({ env: { PATH: '/nix/store/pg/bin' }, fs, pgConfigBindir: noPgConfig });
    expect(found).toBe('/nix/store/pg/bin');
  });

  it('answers undefined when no candidate has the binaries', async () => {
    expect(
      await findPgBinDir({ env: { PATH: '/usr/bin' }, fs: fakeFs([]), pgConfigBindir: noPgConfig }),
    ).toBeUndefined();
  });

  it('orders version directory names numerically', () => {
    expect(['10', '9.6', '16', '15'].sort(compareVersionNames)).toEqual(['9.6', '10', '15', '16']);
  });
});

describe('Java and Maven discovery', () => {
  it('finds the first executable on PATH', async () => {
    const fs = fakeFs(['/b/mvn', '/c/mvn']);
    expect(await findOnPath('mvn', { PATH: ['/a', '/b', '/c'].join(path.delimiter) }, fs, 'linux')).toBe('/b/mvn');
  });

  it('prefers $JAVA_HOME/bin/java over PATH, as Maven does', async () => {
    const fs = fakeFs(['/jdk17/bin/java', '/usr/bin/java']);
    expect(await findJava({ JAVA_HOME: '/jdk17', PATH: '/usr/bin' }, fs)).toBe('/jdk17/bin/java');
    expect(await findJava({ JAVA_HOME: '/missing', PATH: '/usr/bin' }, fs)).toBe('/usr/bin/java');
  });

  it('finds Maven on PATH, else under MAVEN_HOME or M2_HOME', async () => {
    expect(await findMaven({ PATH: '/usr/bin' }, fakeFs(['/usr/bin/mvn']))).toBe('/usr/bin/mvn');
    expect(await findMaven({ PATH: '/usr/bin', M2_HOME: '/opt/maven' }, fakeFs(['/opt/maven/bin/mvn']))).toBe(
      '/opt/maven/bin/mvn',
    );
    expect(await findMaven({ PATH: '/usr/bin' }, fakeFs([]))).toBeUndefined();
  });
});

describe('cache directory', () => {
  it('uses ONCELY_CACHE_DIR first', () => {
    expect(resolveCacheDir({ ONCELY_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/c');
  });

  it('uses $XDG_CACHE_HOME/oncely next', () => {
    expect(resolveCacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/x/oncely');
  });

  it('defaults to ~/.cache/oncely', () => {
    expect(resolveCacheDir({}, '/home/u')).toBe('/home/u/.cache/oncely');
  });

  it('keeps each Kafka version in its own directory', () => {
    expect(kafkaMarkerJar('/c', '3.9.1')).toBe('/c/kafka-3.9.1/libs/kafka_2.13-3.9.1.jar');
  });
});
