/**
 * The Redis client as the app builds it (src/sessions/redis-client.ts), on a redis-server of
 * this test's own: the commands sent in one turn of the event loop leave in one write, every one
 * of them is answered, in order, and a connection lost with commands still held back settles
 * those commands (retried once or failed, never left waiting or mismatched), after which the
 * client carries on.
 */
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import type { Socket } from 'node:net';
import { createRedisClient, waitForRedis } from '../../src/sessions/redis-client.js';
import { redisCommand, startRedis, type RedisProcess } from '../support/redis-server.js';
import { recordWrites } from '../support/socket-writes.js';

describe('the Redis client as the app builds it', function () {
  this.timeout(30_000);
  let redis: RedisProcess;
  let client: Redis;
  before(async () => {
    redis = await startRedis();
    client = createRedisClient({ enabled: true, url: redis.url, sentinelName: '', keyPrefix: '' }) as Redis;
    expect(await waitForRedis(client, 10_000)).to.equal(true);
  });
  after(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  it('sends the commands of one turn of the event loop in one write, and answers each', async () => {
    const writes = recordWrites(client.stream as Socket);
    const sets = Array.from({ length: 50 }, (_, i) => client.set(`coalesce:${i}`, `value ${i}`));
    const gets = Array.from({ length: 50 }, (_, i) => client.get(`coalesce:${i}`));
    const [setReplies, values] = await Promise.all([Promise.all(sets), Promise.all(gets)]);
    expect(setReplies).to.deep.equal(Array(50).fill('OK'));
    expect(values).to.deep.equal(Array.from({ length: 50 }, (_, i) => `value ${i}`));
    expect(writes, 'one writev(2) of 100 commands').to.deep.equal([100]);

    // The next turn's commands are a write of their own: nothing stays held back.
    expect(await client.get('coalesce:7')).to.equal('value 7');
    expect(writes).to.deep.equal([100, 1]);
  });

  it('settles the commands held back when the connection drops, each with its own answer, and carries on', async () => {
    const held = Array.from({ length: 10 }, (_, i) => client.get(`coalesce:${i}`).catch(() => 'failed'));
    // Lost in the same turn, before the held-back write went out: ioredis retries what was
    // unanswered once on the new connection (maxRetriesPerRequest: 1), or fails it.
    (client.stream as Socket).destroy();
    const settled = await Promise.all(held);
    settled.forEach((answer, i) => expect([`value ${i}`, 'failed']).to.include(answer));
    expect(await waitForRedis(client, 10_000)).to.equal(true);
    expect(await client.get('coalesce:3')).to.equal('value 3');
  });
});

describe('the Redis client as the app builds it, through Redis Sentinel', function () {
  this.timeout(30_000);
  let master: RedisProcess;
  let sentinel: RedisProcess;
  before(async () => {
    master = await startRedis();
    sentinel = await startRedis({ sentinelOf: { port: master.port, name: 'sessions' } });
  });
  after(async () => {
    await sentinel?.stop();
    await master?.stop();
  });

  it('finds the master through REDIS_SENTINELS and sends the commands of one turn in one write', async () => {
    const client = createRedisClient({ enabled: true, url: 'redis://127.0.0.1/0', sentinels: [{ host: '127.0.0.1', port: sentinel.port }], sentinelName: 'sessions', keyPrefix: '' }) as Redis;
    try {
      expect(await waitForRedis(client, 10_000)).to.equal(true);
      expect((client.stream as Socket).remotePort).to.equal(master.port);
      const writes = recordWrites(client.stream as Socket);
      const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => client.set(`sentinel:${i}`, String(i))));
      expect(replies).to.deep.equal(Array(30).fill('OK'));
      expect(writes).to.deep.equal([30]);
      expect(await redisCommand(master.port, ['GET', 'sentinel:29'])).to.equal('29');
    } finally {
      client.disconnect();
    }
  });
});
