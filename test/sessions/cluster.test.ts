/**
 * The Redis store on a real 3-master Redis Cluster started here: every key layout keeps each
 * command on one slot, so the whole conformance suite passes unchanged.
 */
import { Cluster } from 'ioredis';
import { randomBytes } from 'node:crypto';
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

  describeStoreConformance('RedisStore on a 3-master cluster', async () => {
    const client = new Cluster(cluster.nodes, { enableAutoPipelining: true });
    const prefix = `cluster-${randomBytes(4).toString('hex')}:`;
    const store = new RedisStore(client, { keyPrefix: prefix, absoluteTimeoutMs: ABSOLUTE_MS });
    const everyKey = async () => (await Promise.all(client.nodes('master').map((n) => n.keys(`${prefix}*`)))).flat();
    return {
      store,
      async dumpAtRest() {
        const keys = await everyKey();
        const values = await Promise.all(keys.map(async (k) => ((await client.type(k)) === 'hash' ? client.hgetall(k) : client.zrange(k, 0, -1))));
        return JSON.stringify({ keys, values });
      },
      async close() {
        for (const key of await everyKey()) await client.del(key);
        client.disconnect();
      },
    };
  }, { stableToken: true, listable: true });
});
