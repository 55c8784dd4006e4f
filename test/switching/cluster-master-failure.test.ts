/**
 * One master of a Redis Cluster falls silent while the others serve. The sessions it holds are
 * served from their database copies and stay there while it is silent — not tried in Redis again
 * on every request, each try a deadline's wait — and the sessions on the other masters stay in
 * Redis. Counted in store timeouts, not in time.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { startRedisCluster, type RedisClusterProcess } from '../support/redis-cluster.js';
import { redisCommand } from '../support/redis-server.js';
import { hashSessionId } from '../../src/sessions/session.js';
import { sample } from './metrics-text.js';

const PREFIX = 'cmf:';

describe('a Redis Cluster master falling silent while the others serve', function () {
  this.timeout(120_000);
  let cluster: RedisClusterProcess;
  let app: AppProcess;

  before(async () => {
    // A node timeout well above the pause below: on a loaded machine the 30 requests can outlast
    // a short pause (the master answers again mid-test) or a short node timeout (it is failed over).
    cluster = await startRedisCluster({ nodeTimeoutMs: 15_000 });
    app = await startApp({
      SESSION_STORAGE: 'redis',
      SESSION_FALLBACK: 'database',
      REDIS_CLUSTER_NODES: cluster.nodesEnv,
      REDIS_KEY_PREFIX: PREFIX,
      SESSION_TOUCH_INTERVAL: '0',
      MIRROR_FLUSH_MS: '0',
      // Long enough for the whole test: a silent master's sessions are not tried again meanwhile.
      BREAKER_HALF_OPEN_AFTER_MS: '60000',
    });
  });
  after(async () => {
    await app?.stop();
    await cluster?.stop();
  });

  /** The port of the master that holds a client's session (the one that does not answer MOVED). */
  async function masterOf(client: Client): Promise<number> {
    const id = client.sessionCookie()!.split('.')[1]!;
    const key = `${PREFIX}s:${hashSessionId(id).slice(0, 22)}`;
    for (const node of cluster.processes) {
      if ((await redisCommand(node.port, ['EXISTS', key]).catch(() => '')) === '1') return node.port;
    }
    throw new Error(`no master holds ${key}`);
  }

  async function userOn(port: number | 'elsewhere', frozenPort: number): Promise<Client> {
    for (let i = 0; i < 200; i++) {
      const client = new Client(app.url);
      await client.signup();
      const on = await masterOf(client);
      if (port === 'elsewhere' ? on !== frozenPort : on === port) return client;
    }
    throw new Error('no session landed where it was needed');
  }

  const timeouts = async () => sample((await new Client(app.url).get('/metrics')).text, 'session_store_operations_total', { backend: 'redis', outcome: 'timeout' });
  const backendOf = async (client: Client) => ((await client.get('/api/session')).json.session as { backend: string }).backend;

  it('serves the silent master’s sessions from the database without trying Redis on every request, and leaves the others in Redis', async () => {
    const frozen = cluster.processes[0]!;
    const stranded = await userOn(frozen.port, frozen.port);
    const elsewhere = await userOn('elsewhere', frozen.port);
    expect(await backendOf(stranded)).to.equal('redis');
    const before = await timeouts();
    // Less than cluster-node-timeout: the cluster stays ok, the other masters serve. Resumed in
    // `finally`; the timer only guards against a hang.
    await frozen.pause(12_000);
    const statuses: number[] = [];
    try {
      for (let i = 0; i < 10; i++) {
        statuses.push((await stranded.get('/api/session')).status);
        statuses.push((await stranded.patch('/api/session', { preferences: { n: i } })).status);
        statuses.push((await elsewhere.get('/api/session')).status);
      }
      expect(statuses.every((s) => s === 200), statuses.join(',')).to.equal(true);
      expect(await backendOf(stranded), 'the stranded session, moved to the fallback').to.equal('database');
      expect(await backendOf(elsewhere), 'a session on another master').to.equal('redis');
    } finally {
      frozen.resume();
    }
    // Its first request found the master silent (a load, perhaps the eviction of the moved
    // copy); the other 19 did not ask it. Tried again on each, they waited two or three each.
    const waited = (await timeouts()) - before;
    expect(waited, 'store timeouts over 20 requests of the stranded session').to.be.at.most(4);
    expect(((await stranded.get('/api/session')).json.preferences as { n: number }).n).to.equal(9);
    await cluster.waitUntilOk();
  });
});
