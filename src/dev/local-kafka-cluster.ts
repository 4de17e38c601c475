/**
 * A local Apache Kafka cluster of three KRaft nodes (each broker and controller), run as child JVMs
 * from the same jars as the single broker, for fault-injection tests: a test can SIGKILL a node by
 * its id and start it again, and ask which node leads a partition, coordinates a group or is the
 * active controller.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import type { Logger } from 'pino';

import { OncelyError, isOncelyError } from '../errors.js';
import { createKafkaClient } from '../kafka/client.js';
import { groupCoordinatorOf, partitionLeaderOf, underReplicatedPartitions } from '../kafka/cluster-roles.js';
import { quorumVoters, randomClusterId } from './kafka-properties.js';
import { LocalKafka, lostKafkaPortRace } from './local-kafka.js';
import { freePorts, runCommand } from './processes.js';

/** Heap of each node: three fit beside the tests on a small machine. */
export const CLUSTER_NODE_HEAP: readonly string[] = ['-Xms128m', '-Xmx384m'];
const MAX_ATTEMPTS = 3;

/** Prints the metadata quorum's leader: what `kafka-metadata-quorum describe --status` calls LeaderId. */
const ACTIVE_CONTROLLER_SOURCE = `import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;

public class ActiveController {
  public static void main(String[] args) throws Exception {
    Properties properties = new Properties();
    properties.put("bootstrap.servers", args[0]);
    properties.put("request.timeout.ms", "10000");
    properties.put("default.api.timeout.ms", "30000");
    try (Admin admin = Admin.create(properties)) {
      System.out.println("LeaderId: " + admin.describeMetadataQuorum().quorumInfo().get().leaderId());
    }
  }
}
`;

export interface LocalKafkaClusterOptions {
  readonly javaPath: string;
  readonly libsDir: string;
  readonly version: string;
  readonly tunables: Readonly<Record<string, string>>;
  readonly logger: Logger;
  /** Nodes in the cluster. */
  readonly size: number;
}

/** One node of a cluster started by `startDevServices({ brokers: 3 })`. */
export interface KafkaClusterNode {
  /** The node's `node.id` (1, 2, 3): what metadata names as a leader, a coordinator or the controller. */
  readonly nodeId: number;
  /** Its client address, `127.0.0.1:port`; the same after a restart. */
  readonly address: string;
  /** The JVM's pid while it runs. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** SIGKILL, no clean shutdown; resolves once the process is gone. */
  kill(): Promise<void>;
  /**
   * SIGSTOP: the node holds its connections and answers nothing (a hung machine), until
   * {@link kill}. The handle's lookups stop asking it.
   */
  freeze(): void;
  readonly frozen: boolean;
  /** Starts a killed node again on its data; resolves once it serves requests. */
  start(): Promise<void>;
}

/** What a fault-injection test needs of a local cluster. */
export interface KafkaClusterHandle {
  readonly nodes: readonly KafkaClusterNode[];
  /** The node with this id; throws for an unknown one. */
  node(nodeId: number): KafkaClusterNode;
  /** The node leading a partition now. */
  leaderOf(topic: string, partition: number): Promise<number>;
  /** The node coordinating a consumer group now (the leader of its `__consumer_offsets` partition). */
  groupCoordinatorOf(groupId: string): Promise<number>;
  /** The node leading the KRaft metadata quorum now: the active controller. */
  activeController(): Promise<number>;
  /** Partitions of these topics whose in-sync replicas are fewer than their replicas. */
  underReplicated(topics: readonly string[]): Promise<number>;
}

export class LocalKafkaCluster implements KafkaClusterHandle {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly options: LocalKafkaClusterOptions,
    private readonly members: readonly LocalKafka[],
  ) {}

  get brokers(): string[] {
    return this.members.flatMap((member) => member.brokers);
  }

  get pids(): (number | undefined)[] {
    return this.members.map((member) => member.pid);
  }

  get dataDirs(): string[] {
    return this.members.map((member) => member.dataDir);
  }

  get nodes(): KafkaClusterNode[] {
    return this.members.map((member, index) => nodeHandle(member, index + 1));
  }

  node(nodeId: number): KafkaClusterNode {
    const member = this.members[nodeId - 1];
    if (member === undefined) {
      throw new OncelyError(
        'ONCELY_DEV_SERVICES_FAILED',
        `the cluster has no node ${nodeId} (nodes 1–${this.members.length}).`,
      );
    }
    return nodeHandle(member, nodeId);
  }

  static async start(options: LocalKafkaClusterOptions): Promise<LocalKafkaCluster> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await LocalKafkaCluster.startOnce(options);
      } catch (error) {
        const retry = attempt < MAX_ATTEMPTS && isOncelyError(error) && lostKafkaPortRace(error.message);
        if (!retry) throw error;
        options.logger.debug({ attempt }, 'oncely dev: the Kafka cluster lost a port race, retrying with new ports');
      }
    }
  }

  private static async startOnce(options: LocalKafkaClusterOptions): Promise<LocalKafkaCluster> {
    const started = Date.now();
    const ports = await freePorts(options.size * 2);
    const clientPorts = ports.slice(0, options.size);
    const controllerPorts = ports.slice(options.size);
    const voters = quorumVoters(controllerPorts);
    const clusterId = randomClusterId(randomBytes);
    const prepared = await Promise.allSettled(
      clientPorts.map((port, index) =>
        LocalKafka.prepareNode({
          ...options,
          heap: CLUSTER_NODE_HEAP,
          node: { nodeId: index + 1, port, controllerPort: controllerPorts[index] ?? 0, voters, clusterId },
        }),
      ),
    );
    const members = prepared.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const cluster = new LocalKafkaCluster(options, members);
    const failed = prepared.find((result) => result.status === 'rejected');
    if (failed !== undefined) {
      await cluster.stop();
      throw failed.reason;
    }
    // All at once: a node serves only once a majority of the quorum runs.
    const launched = await Promise.allSettled(members.map((member) => member.launchNode()));
    const notLaunched = launched.find((result) => result.status === 'rejected');
    if (notLaunched !== undefined) {
      await cluster.stop();
      throw notLaunched.reason;
    }
    options.logger.info(
      { brokers: cluster.brokers, ms: Date.now() - started, heap: CLUSTER_NODE_HEAP.join(' ') },
      `oncely dev: local Apache Kafka ${options.version} cluster of ${options.size} nodes ready`,
    );
    return cluster;
  }

  leaderOf(topic: string, partition: number): Promise<number> {
    return this.withAdmin((admin) => partitionLeaderOf(admin, topic, partition));
  }

  groupCoordinatorOf(groupId: string): Promise<number> {
    return this.withAdmin((admin) => groupCoordinatorOf(admin, groupId));
  }

  underReplicated(topics: readonly string[]): Promise<number> {
    return this.withAdmin((admin) => underReplicatedPartitions(admin, topics));
  }

  /**
   * The leader of the KRaft metadata quorum, from the Admin API's describe-quorum (KIP-836) run by
   * the cluster's own Java client: under KRaft a broker's metadata response names a random broker
   * as "controller", so only the quorum knows its leader. The few lines of Java are compiled and
   * run by the `java` launcher's source-file mode, so no further jar is downloaded.
   */
  async activeController(): Promise<number> {
    const running = this.members.filter((member) => member.running && !member.frozen);
    const first = running[0];
    if (first === undefined) throw new OncelyError('ONCELY_DEV_SERVICES_FAILED', 'no node of the cluster runs.');
    const source = path.join(first.dataDir, 'ActiveController.java');
    await writeFile(source, ACTIVE_CONTROLLER_SOURCE);
    const result = await runCommand(
      this.options.javaPath,
      [
        '-Xmx128m',
        `-Dlog4j.configuration=${pathToFileURL(path.join(first.dataDir, 'log4j.properties')).href}`,
        '-cp',
        path.join(this.options.libsDir, '*'),
        source,
        running.flatMap((member) => member.brokers).join(','),
      ],
      { timeoutMs: 60_000 },
    );
    const leader = /LeaderId: (\d+)/.exec(result.output)?.[1];
    if (result.code !== 0 || leader === undefined) {
      throw new OncelyError(
        'ONCELY_DEV_SERVICES_FAILED',
        `Could not read the cluster's active controller (exit ${result.code ?? result.signal}; the java ` +
          `launcher must come with a JDK to run a source file): ${result.output.trim().slice(-600)}`,
      );
    }
    return Number(leader);
  }

  /** Idempotent: stops every node and removes their directories. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      // SIGKILL first: the data is thrown away, and a clean shutdown of the last nodes waits for
      // a quorum that is already leaving.
      const results = await Promise.allSettled(
        this.members.map(async (member) => {
          await member.kill();
          await member.stop();
        }),
      );
      const failure = results.find((result) => result.status === 'rejected');
      if (failure !== undefined) throw failure.reason;
    })();
    return this.stopping;
  }

  private async withAdmin<T>(work: (admin: ReturnType<ReturnType<typeof createKafkaClient>['admin']>) => Promise<T>) {
    const admin = createKafkaClient({
      clientId: 'oncely-dev-cluster',
      brokers: this.members.filter((member) => member.running && !member.frozen).flatMap((member) => member.brokers),
      connectionTimeoutMs: 2_000,
      requestTimeoutMs: 10_000,
    }).admin();
    try {
      await admin.connect();
      return await work(admin);
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }
}

function nodeHandle(member: LocalKafka, nodeId: number): KafkaClusterNode {
  return {
    nodeId,
    address: member.brokers[0] ?? '',
    get pid() {
      return member.pid;
    },
    get running() {
      return member.running;
    },
    get frozen() {
      return member.frozen;
    },
    kill: () => member.kill(),
    freeze: () => member.freeze(),
    start: () => member.launchNode(),
  };
}
