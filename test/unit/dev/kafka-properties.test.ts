import { describe, expect, it } from 'vitest';

import {
  brokerProperties,
  confluentEnvironment,
  DEFAULT_BROKER_PROPERTIES,
  escapePropertiesText,
  mergeBrokerProperties,
  randomClusterId,
  renderLog4jProperties,
  renderProperties,
} from '../../../src/dev/kafka-properties.js';
import { renderKafkaPom } from '../../../src/dev/kafka-jars.js';

const layout = { port: 19092, controllerPort: 19093, logDir: '/tmp/oncely-kafka-x/data' };

describe('broker properties', () => {
  it('renders a single-node KRaft combined configuration on 127.0.0.1 with static voters', () => {
    const text = renderProperties(brokerProperties(layout, mergeBrokerProperties(undefined)));
    expect(text.split('\n')).toEqual(
      expect.arrayContaining([
        'process.roles=broker,controller',
        'node.id=1',
        'controller.quorum.voters=1@127.0.0.1:19093',
        'listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093',
        'advertised.listeners=PLAINTEXT://127.0.0.1:19092',
        'controller.listener.names=CONTROLLER',
        'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
        'log.dirs=/tmp/oncely-kafka-x/data',
      ]),
    );
    expect(text).not.toContain('localhost');
  });

  it('defaults to test-friendly group and single-node topic settings', () => {
    expect(DEFAULT_BROKER_PROPERTIES).toMatchObject({
      'group.initial.rebalance.delay.ms': '0',
      'group.min.session.timeout.ms': '1000',
      'offsets.topic.replication.factor': '1',
      'offsets.topic.num.partitions': '1',
      'transaction.state.log.replication.factor': '1',
      'transaction.state.log.min.isr': '1',
    });
  });

  it("keeps Kafka's default for auto.create.topics.enable", () => {
    expect(DEFAULT_BROKER_PROPERTIES).not.toHaveProperty('auto.create.topics.enable');
  });

  it('lets brokerProperties override a default and add a property', () => {
    const merged = mergeBrokerProperties({ 'group.min.session.timeout.ms': '500', 'log.retention.ms': '60000' });
    expect(merged['group.min.session.timeout.ms']).toBe('500');
    expect(merged['log.retention.ms']).toBe('60000');
    expect(brokerProperties(layout, merged)['log.retention.ms']).toBe('60000');
  });

  it('refuses brokerProperties that would move the listeners, quorum or directories', () => {
    for (const key of ['listeners', 'controller.quorum.voters', 'log.dirs', 'node.id', 'process.roles']) {
      expect(() => mergeBrokerProperties({ [key]: 'x' })).toThrow(
        new RegExp(`Invalid option \`kafka.brokerProperties\`: "${key.replace(/\./g, '\\.')}" is managed`),
      );
    }
  });

  it('refuses a brokerProperties value that is not a string', () => {
    expect(() => mergeBrokerProperties({ 'num.io.threads': 4 as unknown as string })).toThrow(/must map to a string/);
  });

  it('escapes text the way java.util.Properties reads it', () => {
    expect(escapePropertiesText('C:\\kafka\\logs', false)).toBe('C:\\\\kafka\\\\logs');
    expect(escapePropertiesText('a\nb', false)).toBe('a\\nb');
    expect(escapePropertiesText(' lead', false)).toBe('\\ lead');
    expect(escapePropertiesText('a b=c', true)).toBe('a\\ b\\=c');
    expect(escapePropertiesText('x=y:z', false)).toBe('x=y:z');
    expect(escapePropertiesText('#not a comment', false)).toBe('\\#not a comment');
  });

  it('writes a quiet reload4j configuration into the given file', () => {
    const text = renderLog4jProperties('/tmp/k/logs/server.log');
    expect(text).toContain('log4j.rootLogger=WARN, file\n');
    expect(text).toContain('log4j.appender.file.File=/tmp/k/logs/server.log\n');
    expect(text).toContain('log4j.logger.kafka.server.KafkaRaftServer=INFO\n');
  });

  it('maps properties to cp-kafka environment variables', () => {
    expect(
      confluentEnvironment({
        'group.min.session.timeout.ms': '1000',
        'confluent.some_flag': 'x',
        'a-b.c': 'y',
      }),
    ).toEqual({
      KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS: '1000',
      KAFKA_CONFLUENT_SOME__FLAG: 'x',
      KAFKA_A___B_C: 'y',
    });
  });

  it('generates 22-character base64url cluster ids that never start with a dash', () => {
    const bytes = [Buffer.alloc(16, 0xfb), Buffer.alloc(16, 7)];
    const id = randomClusterId(() => bytes.shift() ?? Buffer.alloc(16, 1));
    expect(id).toBe(Buffer.alloc(16, 7).toString('base64url'));
    expect(id).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
  });
});

describe('the Maven pom for the broker classpath', () => {
  it('names kafka_2.13 of the requested version and the reload4j logging binding', () => {
    const pom = renderKafkaPom('3.9.1');
    expect(pom).toMatch(/<artifactId>kafka_2\.13<\/artifactId>\s*<version>3\.9\.1<\/version>/);
    expect(pom).toMatch(/<artifactId>slf4j-reload4j<\/artifactId>\s*<version>1\.7\.36<\/version>/);
    expect(pom).toMatch(/<artifactId>reload4j<\/artifactId>\s*<version>1\.2\.25<\/version>/);
    expect(pom).toContain('<packaging>pom</packaging>');
  });
});
