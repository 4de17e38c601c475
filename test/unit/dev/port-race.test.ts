import { describe, expect, it } from 'vitest';

import { lostKafkaPortRace as kafkaLostPortRace } from '../../../src/dev/local-kafka.js';
import { lostPostgresPortRace as postgresLostPortRace } from '../../../src/dev/local-postgres.js';

// Ports are allocated free and bound a moment later by the server; another process may take one in
// between. Only that failure is retried with new ports; any other start failure is reported at once.
describe('retrying a start that lost a port race', () => {
  it('recognises a Kafka broker that could not bind its listener', () => {
    expect(
      kafkaLostPortRace(
        'ERROR [KafkaRaftServer nodeId=1] Fatal error during broker startup. Prepare to shutdown ' +
          '(kafka.server.BrokerServer)\norg.apache.kafka.common.KafkaException: Socket server failed to bind to ' +
          '127.0.0.1:41115: Address already in use.',
      ),
    ).toBe(true);
    expect(kafkaLostPortRace('java.net.BindException: Address already in use')).toBe(true);
  });

  it('does not retry a Kafka failure of another kind', () => {
    expect(kafkaLostPortRace('Error: Could not find or load main class kafka.Kafka')).toBe(false);
  });

  it('recognises a PostgreSQL server that could not bind its port', () => {
    expect(
      postgresLostPortRace(
        'LOG:  could not bind IPv4 address "127.0.0.1": Address already in use\n' +
          'WARNING:  could not create listen socket for "127.0.0.1"\nFATAL:  could not create any TCP/IP sockets',
      ),
    ).toBe(true);
  });

  it('does not retry a PostgreSQL failure of another kind', () => {
    expect(postgresLostPortRace('FATAL:  data directory "/tmp/x" has invalid permissions')).toBe(false);
  });
});
