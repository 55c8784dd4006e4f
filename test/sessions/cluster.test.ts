/**
 * The Redis store on a real 3-master Redis Cluster started here: every key layout keeps each
 * command on one slot, so the whole conformance suite passes unchanged, with each node's
 * writes coalesced per turn of the event loop as the app's client does.
 */
import { expect } from 'chai';
import { Cluster, type Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { coalesceWrites, createRedisClient, waitForRedis } from '../../src/sessions/redis-client.js';
import { decodeRecord } from '../../src/sessions/redis-record.js';
import { RedisStore } from '../../src/sessions/redis-store.js';
import { startRedisCluster, type RedisClusterProcess } from '../support/redis-cluster.js';
import { recordWrites } from '../support/socket-writes.js';
import { describeStoreConformance } from './conformance.js';
import { ABSOLUTE_MS } from './fixtures.js';

describe('Redis Cluster', function () {
  this.timeout(120_000);
  let cluster: RedisClusterProcess;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(() => cluster?.stop());

  it("the app's cluster client sends the commands of one turn for one node in one write", async () => {
    const client = createRedisClient({ enabled: true, url: `redis://${cluster.nodes[0]!.host}:${cluster.nodes[0]!.port}`, cluster: cluster.nodes, sentinelName: '', keyPrefix: '' }) as Cluster;
    try {
      expect(await waitForRedis(client, 20_000)).to.equal(true);
      await client.set('{coalesce}:warm', '1'); // learns which node holds the slot
      // Only nodes with a connection can be watched; the one holding the slot has one by now.
      const masters = (client.nodes('master') as Redis[]).filter((node) => node.stream);
      const writes = masters.map((node) => recordWrites(node.stream as Socket));
      const values = await Promise.all(Array.from({ length: 20 }, (_, i) => client.set(`{coalesce}:${i}`, String(i)).then(() => client.get(`{coalesce}:${i}`))));
      expect(values).to.deep.equal(Array.from({ length: 20 }, (_, i) => String(i)));
      // One node holds the slot: 20 SETs in one write, then the 20 GETs sent as the SETs' answers came in.
      const used = writes.filter((w) => w.length > 0);
      expect(used).to.have.length(1);
      expect(used[0]![0]).to.equal(20);
    } finally {
      client.disconnect();
    }
  });

  for (const userIndex of [true, false]) {
    describeStoreConformance(`RedisStore on a 3-master cluster, ${userIndex ? 'with' : 'without'} the user index`, async () => {
      const client = new Cluster(cluster.nodes);
      // As the app's cluster client: each node's writes coalesced per turn.
      client.on('+node', coalesceWrites);
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
    }, { stableToken: true, listable: userIndex, clientInfo: false, ordersMoves: true });
  }
});
