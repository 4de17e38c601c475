import { describe, expect, it } from 'vitest';

import { groupMetadataPartition, javaStringHash } from '../../../src/kafka/cluster-roles.js';
import { CLUSTER_BROKER_PROPERTIES, clusterNodeProperties, quorumVoters } from '../../../src/dev/kafka-properties.js';

describe('cluster roles', () => {
  it("hashes a group id as Java's String.hashCode does", () => {
    // Values of "…".hashCode() in Java.
    expect(javaStringHash('')).toBe(0);
    expect(javaStringHash('a')).toBe(97);
    expect(javaStringHash('hello')).toBe(99_162_322);
    expect(javaStringHash('ledger-chaos-s42')).toBe(javaStringHashReference('ledger-chaos-s42'));
    expect(javaStringHash('polygenelubricants')).toBe(-2_147_483_648);
  });

  it('places a group on its __consumer_offsets partition as the broker does (Utils.abs, then modulo)', () => {
    expect(groupMetadataPartition('hello', 50)).toBe(99_162_322 % 50);
    // Integer.MIN_VALUE: Kafka's Utils.abs maps it to 0.
    expect(groupMetadataPartition('polygenelubricants', 50)).toBe(0);
    expect(groupMetadataPartition('anything', 1)).toBe(0);
  });
});

describe('cluster broker properties', () => {
  it('replicates internal and new topics to three nodes and acknowledges a write on two', () => {
    expect(CLUSTER_BROKER_PROPERTIES).toMatchObject({
      'default.replication.factor': '3',
      'min.insync.replicas': '2',
      'offsets.topic.replication.factor': '3',
      'transaction.state.log.replication.factor': '3',
      'transaction.state.log.min.isr': '2',
      'unclean.leader.election.enable': 'false',
    });
  });

  it('gives each node its own id and every node the same static voters', () => {
    const voters = quorumVoters([30001, 30002, 30003]);
    expect(voters).toBe('1@127.0.0.1:30001,2@127.0.0.1:30002,3@127.0.0.1:30003');
    const node = clusterNodeProperties(
      { nodeId: 2, port: 29093, controllerPort: 30002, logDir: '/tmp/x', voters },
      CLUSTER_BROKER_PROPERTIES,
    );
    expect(node['node.id']).toBe('2');
    expect(node['controller.quorum.voters']).toBe(voters);
    expect(node['listeners']).toBe('PLAINTEXT://127.0.0.1:29093,CONTROLLER://127.0.0.1:30002');
  });
});

function javaStringHashReference(text: string): number {
  let hash = 0n;
  for (const unit of Array.from({ length: text.length }, (_, i) => text.charCodeAt(i))) {
    hash = BigInt.asIntN(32, hash * 31n + BigInt(unit));
  }
  return Number(hash);
}
