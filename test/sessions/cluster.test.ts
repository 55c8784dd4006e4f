/**
 * The Redis store on a real 3-master Redis Cluster started here: every key layout keeps each
 * command on one slot, so the whole conformance suite passes unchanged.
 */
import { Cluster } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { decodeRecord } from '../../src/sessions/redis-record.js';
import { RedisStore } from '../../src/sessions/redis-store.js';
import { startRedisCluster, type RedisClusterProcess } from '../support/redis-cluster.js';
import { describeStoreConformance } from './conformance.js';
import { ABSOLUTE_MS } from './fixtures.js';

describe('Redis Cluster', function () {
  this.timeout(120_000);
  let cluster: RedisClusterProcess;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(() => cluster?.stop());

  for (const userIndex of [true, false]) {
    describeStoreConformance(`RedisStore on a 3-master cluster, ${userIndex ? 'with' : 'without'} the user index`, async () => {
      const client = new Cluster(cluster.nodes);
      const prefix = `cluster-${randomBytes(4).toString('hex')}:`;
      const store = new RedisStore(client, { keyPrefix: prefix, absoluteTimeoutMs: ABSOLUTE_MS, userIndex });
      const everyKey = async () => (await Promise.all(client.nodes('master').map((n) => n.keys(`${prefix}*`)))).flat();
      // A session value is binary: as latin1 text, as base64url, and decoded (a raw handle reads as text only there).
      const atRest = async (key: string) => {
        const type = await client.type(key);
        if (type === 'hash') return client.hgetall(key);
        if (type !== 'string') return client.zrange(key, 0, -1);
        const raw = (await client.getBuffer(key))!;
        return { latin1: raw.toString('latin1'), base64url: raw.toString('base64url'), decoded: decodeRecord(raw, '', '') };
      };
      return {
        store,
        async dumpAtRest() {
          const keys = await everyKey();
          return JSON.stringify({ keys, values: await Promise.all(keys.map(atRest)) });
        },
        async close() {
          for (const key of await everyKey()) await client.del(key);
          client.disconnect();
        },
      };
    }, { stableToken: true, listable: userIndex, clientInfo: false });
  }
});
