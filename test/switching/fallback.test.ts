/**
 * Redis goes away mid-traffic and comes back (empty: it keeps nothing on disk). Nobody is
 * logged out, requests keep succeeding from the database, /readyz and the metrics say what
 * happened, and afterwards sessions move back to Redis. Run against a single Redis and
 * against a 3-master Redis Cluster (one master killed: the cluster stops serving).
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { startRedisCluster } from '../support/redis-cluster.js';
import { redisCommand, startRedis, waitUntil } from '../support/redis-server.js';
import { counterTraffic, type TrafficUser } from './counter-traffic.js';
import { sample } from './metrics-text.js';

interface User extends TrafficUser {
  platformId: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ADMIN_TOKEN = 'fallback-test-admin-token-0123456789abcdef';
const adminList = async (app: AppProcess, userId: number) =>
  ((await new Client(app.url).get(`/api/admin/users/${userId}/sessions`, { Authorization: `Bearer ${ADMIN_TOKEN}` })).json.sessions as Array<{ backend: string }>).map((s) => s.backend);

/** A Redis deployment the test can break and mend. */
interface RedisUnderTest {
  env: Record<string, string>;
  kill(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function singleRedis(): Promise<RedisUnderTest> {
  const r = await startRedis();
  return { env: { REDIS_URL: r.url }, kill: () => r.kill(), restart: () => r.restart(), stop: () => r.stop() };
}

async function redisCluster(): Promise<RedisUnderTest> {
  const c = await startRedisCluster();
  return {
    env: { REDIS_CLUSTER_NODES: c.nodesEnv },
    async kill() {
      await c.processes[0]!.kill();
      // Until the survivors mark it failed (cluster-node-timeout), they go on serving their own
      // slots, and sessions whose key lives there are still served by Redis: wait for the outage
      // this test is about, the whole cluster refusing (full slot coverage is required) — on
      // every survivor, as each one changes its state on its own (one may lag on a busy host).
      for (const survivor of c.processes.slice(1)) {
        await waitUntil(`cluster_state:fail on ${survivor.port}`, async () => (await redisCommand(survivor.port, ['CLUSTER', 'INFO'])).includes('cluster_state:fail'), 600);
      }
    },
    async restart() {
      await c.processes[0]!.restart();
      await c.waitUntilOk();
    },
    stop: () => c.stop(),
  };
}

for (const [name, setup] of [
  ['a single Redis', singleRedis],
  ['a Redis Cluster', redisCluster],
] as const) describe(`falling back when ${name} goes down, and coming back`, function () {
  this.timeout(120_000);
  let redis: RedisUnderTest;
  let app: AppProcess;
  const users: User[] = [];
  /** Only reads during the outage: nothing it does writes its session. */
  let reader: { client: Client; userId: number };
  const failures: string[] = [];
  const lagged = new Set<number>();

  before(async () => {
    redis = await setup();
    app = await startApp({
      SESSION_STORAGE: 'redis',
      SESSION_FALLBACK: 'database',
      ...redis.env,
      BREAKER_HALF_OPEN_AFTER_MS: '300',
      SESSION_TOUCH_INTERVAL: '0',
      // The database copy written through, so "with their data" can be checked exactly: written
      // behind (the default), every change made in the last MIRROR_FLUSH_MS before the kill may be
      // lost, and how many that is depends on how fast this machine runs the traffic.
      MIRROR_FLUSH_MS: '0',
      // The outage is Redis refusing (a killed process, a cluster that says CLUSTERDOWN), which
      // fails over at once; a deadline of 1 s keeps a busy machine's late answer before it from
      // moving a session to the database early ("serves everyone from Redis to begin with").
      STORE_TIMEOUT_MS: '1000',
      ADMIN_TOKEN,
    });
    const readerClient = new Client(app.url, 'fallback-reader');
    reader = { client: readerClient, userId: (await readerClient.signup()).user.id };
    for (let i = 0; i < 6; i++) {
      const client = new Client(app.url, `fallback-${i}`);
      const { user } = await client.signup();
      const p = await client.post('/api/platforms', { name: `P${i}`, type: 'web' });
      const platformId = (p.json.platform as { id: number }).id;
      await client.post(`/api/platforms/${platformId}/activate`);
      users.push({ client, userId: user.id, platformId, counter: 0 });
    }
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });

  const traffic = (rounds: number) => counterTraffic(users, rounds, failures, lagged);

  const backendOf = async (u: Pick<User, 'client'>) => ((await u.client.get('/api/session')).json.session as { backend: string }).backend;

  it('serves everyone from Redis to begin with', async () => {
    await traffic(6);
    expect(failures).to.deep.equal([]);
    for (const u of users) expect(await backendOf(u)).to.equal('redis');
  });

  it('keeps everyone logged in, with their data, while Redis is down', async () => {
    const during = traffic(30);
    await sleep(50);
    await redis.kill();
    await during;
    await traffic(12);
    expect([...new Set(failures)]).to.deep.equal([]);
    for (const u of users) expect(await backendOf(u)).to.equal('database');
    // A session that is only read is served from its copy too, and every listing, the admin's
    // included, names where it now is — not where it was before the outage.
    expect(await backendOf(reader)).to.equal('database');
    expect(reader.client.sessionCookie(), 'the cookie points at the copy').to.match(/^d\./);
    expect(((await reader.client.get('/api/sessions')).json.sessions as Array<{ backend: string }>).map((s) => s.backend)).to.deep.equal(['database']);
    expect(await adminList(app, reader.userId)).to.deep.equal(['database']);
  });

  it('says so on /readyz and /metrics', async () => {
    const ready = await new Client(app.url).get('/readyz');
    expect(ready.status).to.equal(200);
    expect(ready.json).to.deep.include({ status: 'degraded', active: 'redis', fallback: 'database' });
    expect(ready.json.backends).to.deep.include({ redis: 'down', database: 'up' });
    const metrics = (await new Client(app.url).get('/metrics')).text;
    expect(sample(metrics, 'session_store_up', { backend: 'redis' })).to.equal(0);
    expect(sample(metrics, 'session_store_fallbacks_total', { from: 'redis', to: 'database' })).to.be.greaterThan(0);
    expect(sample(metrics, 'session_backend_selected_total', { backend: 'database', source: 'fallback' })).to.be.greaterThan(0);
  });

  it('lets people log in and out during the outage, and a logout stays a logout', async () => {
    const newcomer = new Client(app.url);
    await newcomer.signup();
    expect((await newcomer.get('/api/session')).status).to.equal(200);
    const leaving = new Client(app.url);
    await leaving.signup();
    const cookie = leaving.sessionCookie()!;
    expect((await leaving.post('/api/logout')).status).to.equal(204);
    users.push({ client: newcomer, userId: ((await newcomer.get('/api/session')).json.user as { id: number }).id, platformId: -1, counter: 0 });
    (globalThis as { leavingCookie?: string }).leavingCookie = cookie;
  });

  it('moves sessions back to Redis once it returns, still logging nobody out', async () => {
    users.pop();
    await redis.restart();
    let readyz: Record<string, unknown> = {};
    for (let i = 0; i < 100; i++) {
      readyz = (await new Client(app.url).get('/readyz')).json;
      if ((readyz.backends as Record<string, string>).redis === 'up') break;
      await sleep(100);
    }
    expect(readyz.backends).to.deep.include({ redis: 'up' });
    // Sessions move back on their next requests (a cluster may need a moment to serve every slot).
    let where: string[] = [];
    for (let i = 0; i < 40; i++) {
      await traffic(3);
      where = await Promise.all(users.map(backendOf));
      if (where.every((b) => b === 'redis')) break;
      await sleep(250);
    }
    expect([...new Set(failures)]).to.deep.equal([]);
    expect(where).to.deep.equal(users.map(() => 'redis'));
    // The session adopted by the copy moves back too, and the directory follows it.
    await waitUntil('the reader back in Redis', async () => (await backendOf(reader)) === 'redis', 100);
    expect(await adminList(app, reader.userId)).to.deep.equal(['redis']);
    const metrics = (await new Client(app.url).get('/metrics')).text;
    expect(sample(metrics, 'session_store_up', { backend: 'redis' })).to.equal(1);

    const replay = new Client(app.url);
    replay.cookies.set('sid', (globalThis as { leavingCookie?: string }).leavingCookie!);
    expect((await replay.get('/api/session')).status).to.equal(401);
  });
});
