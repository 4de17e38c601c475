/**
 * The local broker's `server.properties` and `log4j.properties`, rendered by pure functions.
 *
 * Defaults are tuned for tests on one node, not for production: a new group starts at once
 * (`group.initial.rebalance.delay.ms=0`) and consumers may use session timeouts down to one second,
 * so a killed group member is noticed quickly in fault-injection tests.
 */
import { configError } from '../errors.js';

/** Tunables a caller may override with `kafka.brokerProperties`. */
export const DEFAULT_BROKER_PROPERTIES: Readonly<Record<string, string>> = {
  'num.partitions': '1',
  'default.replication.factor': '1',
  'min.insync.replicas': '1',
  'offsets.topic.replication.factor': '1',
  'offsets.topic.num.partitions': '1',
  'transaction.state.log.replication.factor': '1',
  'transaction.state.log.min.isr': '1',
  // The default of 50 partitions makes the first transactional producer wait for 50 leaders.
  'transaction.state.log.num.partitions': '1',
  // Default 3000: every new consumer group would wait three seconds before its first assignment.
  'group.initial.rebalance.delay.ms': '0',
  // Default 6000: tests give consumers short session timeouts to notice killed members fast.
  'group.min.session.timeout.ms': '1000',
  // auto.create.topics.enable keeps Kafka's default (true) on purpose.
};

/**
 * Keys oncely sets from the ports and directories it allocates; overriding them would make the
 * broker unreachable or break the single-node quorum, so they are refused with `ONCELY_CONFIG`.
 */
export const RESERVED_BROKER_PROPERTIES: readonly string[] = [
  'process.roles',
  'node.id',
  'broker.id',
  'controller.quorum.voters',
  'controller.quorum.bootstrap.servers',
  'controller.listener.names',
  'listeners',
  'advertised.listeners',
  'listener.security.protocol.map',
  'inter.broker.listener.name',
  'log.dirs',
  'log.dir',
  'metadata.log.dir',
];

export interface BrokerLayout {
  /** PLAINTEXT port clients connect to, on 127.0.0.1. */
  readonly port: number;
  /** CONTROLLER port of the KRaft quorum, on 127.0.0.1. */
  readonly controllerPort: number;
  /** Absolute directory for the log segments and the metadata log. */
  readonly logDir: string;
}

/**
 * The defaults of a three-node cluster: what production runs (every partition on three brokers, a
 * write acknowledged by two of them before `acks: -1` returns, no unclean leader election), plus
 * the single node's test-friendly group settings and quicker detection of a killed broker.
 */
export const CLUSTER_BROKER_PROPERTIES: Readonly<Record<string, string>> = {
  ...DEFAULT_BROKER_PROPERTIES,
  'default.replication.factor': '3',
  'min.insync.replicas': '2',
  'offsets.topic.replication.factor': '3',
  'transaction.state.log.replication.factor': '3',
  'transaction.state.log.min.isr': '2',
  // Kafka's default, stated: a replica that was out of sync never becomes leader, so a write
  // acknowledged by the in-sync replicas cannot be truncated away by a leader change.
  'unclean.leader.election.enable': 'false',
  // Defaults 9000 / 2000: the controller fences a SIGKILLed node (and moves its leaders) sooner.
  'broker.session.timeout.ms': '6000',
  'broker.heartbeat.interval.ms': '1000',
};

/** Merges user overrides over the defaults; refuses reserved keys and keys/values that are not strings. */
export function mergeBrokerProperties(
  overrides: Readonly<Record<string, string>> | undefined,
  defaults: Readonly<Record<string, string>> = DEFAULT_BROKER_PROPERTIES,
): Record<string, string> {
  const merged: Record<string, string> = { ...defaults };
  for (const [key, value] of Object.entries(overrides ?? {})) {
    if (RESERVED_BROKER_PROPERTIES.includes(key)) {
      throw configError(
        'kafka.brokerProperties',
        `"${key}" is managed by startDevServices() (it allocates ports and directories itself); remove it.`,
      );
    }
    if (typeof value !== 'string' || key.trim() === '') {
      throw configError('kafka.brokerProperties', `"${key}" must map to a string value.`);
    }
    merged[key] = value;
  }
  return merged;
}

/** Escapes per java.util.Properties, so Windows paths and odd values survive the round trip. */
export function escapePropertiesText(text: string, isKey: boolean): string {
  let out = '';
  for (const [index, char] of [...text].entries()) {
    switch (char) {
      case '\\':
        out += '\\\\';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\t':
        out += '\\t';
        break;
      case '\f':
        out += '\\f';
        break;
      case '=':
      case ':':
      case '#':
      case '!':
        out += isKey || index === 0 ? `\\${char}` : char;
        break;
      case ' ':
        // Leading spaces of a value and every space of a key would be eaten by the parser.
        out += isKey || index === 0 ? '\\ ' : ' ';
        break;
      default:
        out += char;
    }
  }
  return out;
}

export function renderProperties(properties: Readonly<Record<string, string>>): string {
  return (
    Object.entries(properties)
      .map(([key, value]) => `${escapePropertiesText(key, true)}=${escapePropertiesText(value, false)}`)
      .join('\n') + '\n'
  );
}

/** The full single-node KRaft configuration: fixed topology first, then tunables. */
export function brokerProperties(
  layout: BrokerLayout,
  tunables: Readonly<Record<string, string>>,
): Record<string, string> {
  return {
    'process.roles': 'broker,controller',
    'node.id': '1',
    // Static voters: the storage is formatted without --standalone.
    'controller.quorum.voters': `1@127.0.0.1:${layout.controllerPort}`,
    // 127.0.0.1 rather than localhost: kafkajs cannot use IPv6 (kafkajs #1589).
    listeners: `PLAINTEXT://127.0.0.1:${layout.port},CONTROLLER://127.0.0.1:${layout.controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${layout.port}`,
    'inter.broker.listener.name': 'PLAINTEXT',
    'controller.listener.names': 'CONTROLLER',
    'listener.security.protocol.map': 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    'log.dirs': layout.logDir,
    ...tunables,
  };
}

export interface ClusterNodeLayout extends BrokerLayout {
  readonly nodeId: number;
  /** `id@127.0.0.1:port` of every node's controller listener, comma-separated. */
  readonly voters: string;
}

/** One node of a local KRaft cluster: combined broker and controller, static voters. */
export function clusterNodeProperties(
  layout: ClusterNodeLayout,
  tunables: Readonly<Record<string, string>>,
): Record<string, string> {
  return {
    ...brokerProperties(layout, tunables),
    'node.id': String(layout.nodeId),
    'controller.quorum.voters': layout.voters,
  };
}

/** The voters string of nodes `1..n` listening for the quorum on `controllerPorts`. */
export function quorumVoters(controllerPorts: readonly number[]): string {
  return controllerPorts.map((port, index) => `${index + 1}@127.0.0.1:${port}`).join(',');
}

/** A quiet reload4j configuration: warnings and the start/stop lines, into one file. */
export function renderLog4jProperties(logFile: string): string {
  return renderProperties({
    'log4j.rootLogger': 'WARN, file',
    'log4j.appender.file': 'org.apache.log4j.FileAppender',
    'log4j.appender.file.File': logFile,
    'log4j.appender.file.Append': 'true',
    'log4j.appender.file.layout': 'org.apache.log4j.PatternLayout',
    'log4j.appender.file.layout.ConversionPattern': '[%d] %p %m (%c)%n',
    // "Kafka Server started" / shutdown lines, so the log shows the broker's life at a glance.
    'log4j.logger.kafka.server.KafkaRaftServer': 'INFO',
  });
}

/**
 * The same tunables for the confluentinc/cp-kafka image, which maps `KAFKA_*` environment
 * variables to properties: `.` → `_`, `_` → `__`, `-` → `___`, upper case.
 */
export function confluentEnvironment(properties: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(properties)) {
    const name = key.replace(/_/g, '__').replace(/-/g, '___').replace(/\./g, '_').toUpperCase();
    env[`KAFKA_${name}`] = value;
  }
  return env;
}

/** A random KRaft cluster id: 16 random bytes, base64url without padding, like `random-uuid`. */
export function randomClusterId(randomBytes: (size: number) => Buffer): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    // Kafka's own generator never returns an id starting with '-', which would read as a flag.
    if (!id.startsWith('-')) return id;
  }
}
