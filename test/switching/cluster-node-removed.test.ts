/**
 * An operator moves a master's slots to another and removes it from the Redis Cluster
 * (`redis-cli --cluster reshard`, then `del-node`, which resets the node and leaves it running).
 * The cluster is healthy; Switchboard must say so. Its slot map, refreshed only when a command is
 * redirected, still named the removed node, which answers `cluster_state:fail`: every probe said
 * Redis was down (/readyz "degraded", session_store_up 0), and with little traffic the failed
 * probes opened the breaker and sent sessions to the database. An instance whose subscription
 * (other instances' news: logouts, the override) sat on the removed node heard nothing more but
 * its polls.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startApp, type AppProcess } from '../support/app-server.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { Client } from '../support/http-client.js';
import { removeNode, startRedisCluster, type RedisClusterProcess } from '../support/redis-cluster.js';
import { redisCommand, waitUntil } from '../support/redis-server.js';
import { sample } from './metrics-text.js';

const run = promisify(execFile);
const ADMIN_TOKEN = 'cluster-node-removed-admin-token-0123';
const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };

/** Two of the app's health probes (every 5 s) and then some. */
const WATCH_MS = 12_000;

describe('a master removed from the Redis Cluster while it keeps running', function () {
  this.timeout(180_000);
  let cluster: RedisClusterProcess;
  let app: AppProcess;

  before(async () => {
    cluster = await startRedisCluster({ masters: 4 });
    app = await startApp({ SESSION_STORAGE: 'redis', SESSION_FALLBACK: 'database', REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_KEY_PREFIX: 'cnr:' });
  });
  after(async () => {
    await app?.stop();
    await cluster?.stop();
  });

  it('is not reported down, and does not send sessions to the database', async () => {
    const user = new Client(app.url);
    await user.signup();
    const [first, , , removed] = cluster.nodes as [{ port: number }, unknown, unknown, { port: number }];
    await removeNode(first.port, removed.port);
    expect(String(await redisCommand(removed.port, ['CLUSTER', 'INFO'])), 'the removed node, still running').to.match(/cluster_state:fail/);

    const metrics = async () => (await new Client(app.url).get('/metrics')).text;
    const seen = new Set<number>();
    for (const end = Date.now() + WATCH_MS; Date.now() < end; ) {
      seen.add(sample(await metrics(), 'session_store_up', { backend: 'redis' }));
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect([...seen], 'session_store_up{backend="redis"} while watched').to.deep.equal([1]);
    const ready = await new Client(app.url).get('/readyz');
    expect(ready.json, ready.text).to.deep.include({ status: 'ok' });
    expect(sample(await metrics(), 'session_store_fallbacks_total', { from: 'redis' }), 'sessions sent to the database').to.equal(0);
    const res = await user.get('/api/session');
    expect(res.status, res.text).to.equal(200);
  });
});

describe('an instance whose Redis subscription is on the master taken out of the cluster', function () {
  this.timeout(240_000);
  let cluster: RedisClusterProcess;
  let db: TestDatabase;
  let listening: AppProcess | undefined;
  let telling: AppProcess | undefined;

  before(async () => {
    cluster = await startRedisCluster({ masters: 4 });
    db = await createTestDatabase('cluster_subscriber');
  });
  after(async () => {
    await listening?.stop();
    await telling?.stop();
    await cluster?.stop();
    await db?.drop();
  });

  it('moves its subscription off the node once the node is gone, and hears the other instances there', async () => {
    const env = { SESSION_STORAGE: 'redis', REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_KEY_PREFIX: 'cns:', DATABASE_URL: db.url, ADMIN_TOKEN };
    listening = await startApp(env);
    /** The nodes with a subscriber on one of this deployment's channels, and how many on each. */
    const subscribers = async () => {
      const found = new Map<number, number>();
      const cli = async (port: number, ...args: string[]) => (await run('redis-cli', ['-p', String(port), ...args])).stdout.trim().split('\n').filter(Boolean);
      for (const node of cluster.nodes) {
        // One of the instances' channels (each subscribes to several, on one connection).
        const [channel] = await cli(node.port, 'PUBSUB', 'CHANNELS', 'cns:*flag-override');
        if (channel) found.set(node.port, Number((await cli(node.port, 'PUBSUB', 'NUMSUB', channel))[1]));
      }
      return found;
    };
    let on: number[] = [];
    await waitUntil('the instance subscribed', async () => (on = [...(await subscribers()).keys()]).length === 1, 200);
    const removed = on[0]!;
    telling = await startApp(env);
    await removeNode(cluster.nodes.find((node) => node.port !== removed)!.port, removed);

    // The app's probe (every 5 s) finds the node gone; its subscription follows within a few.
    await waitUntil('both instances subscribed on nodes of the cluster, none on the removed one', async () => {
      const found = await subscribers();
      return !found.has(removed) && [...found.values()].reduce((a, b) => a + b, 0) === 2;
    }, 600);
    for (const backend of ['cookie', 'database']) {
      expect((await new Client(telling.url).put('/api/admin/flags/session-storage', { backend }, auth)).status).to.equal(200);
      await waitUntil(`the override (${backend}) heard by the other instance`, async () => (await new Client(listening!.url).get('/api/admin/flags', auth)).json.value === backend, 600);
    }
  });
});
