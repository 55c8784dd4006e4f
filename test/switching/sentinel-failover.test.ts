/**
 * A Redis Sentinel failover mid-traffic: the master is killed, Sentinel promotes its replica,
 * and the app (REDIS_SENTINELS) finds the new master by itself. Nobody is logged out, no change
 * that was answered 2xx is lost, the database copy serves while there is no master, and the
 * sessions end up in Redis again — on the promoted replica, with what it had replicated.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { counterTraffic, type TrafficUser } from './counter-traffic.js';
import { sample } from './metrics-text.js';

const MASTER_NAME = 'sessions';
/** Sentinel's promotion takes down-after (1 s) plus an election; 60 s (1200 × 50 ms) covers a loaded CI machine. */
const FAILOVER_ATTEMPTS = 1200;

type User = TrafficUser;

type SessionBody = { user?: { id: number }; session?: { backend: string }; preferences?: { counter?: number } };

/** The address Sentinel gives for the master now, from `INFO sentinel` (`address=HOST:PORT`). */
async function masterPort(sentinel: RedisProcess): Promise<number | undefined> {
  const info = await redisCommand(sentinel.port, ['INFO', 'sentinel']);
  const match = new RegExp(`name=${MASTER_NAME},status=ok,address=[^:]+:(\\d+),slaves=(\\d+)`).exec(info);
  return match ? Number(match[1]) : undefined;
}

/** A master, its replica in sync, and `count` Sentinels that know them both (and each other). */
async function startSentinelSetup(count = 1): Promise<{ master: RedisProcess; replica: RedisProcess; sentinels: RedisProcess[] }> {
  const master = await startRedis();
  const replica = await startRedis({ extraArgs: () => ['--replicaof', '127.0.0.1', String(master.port)] });
  await waitUntil('the replica in sync', async () => (await redisCommand(replica.port, ['INFO', 'replication'])).includes('master_link_status:up'));
  const sentinels: RedisProcess[] = [];
  for (let i = 0; i < count; i++) sentinels.push(await startRedis({ sentinelOf: { port: master.port, name: MASTER_NAME } }));
  // Sentinel learns of the replica from the master's INFO, every 10 s at first, and of the other
  // Sentinels from their hellos through the master, every 2 s.
  for (const sentinel of sentinels) {
    await waitUntil('Sentinel to know the replica and the other Sentinels', async () => (await redisCommand(sentinel.port, ['INFO', 'sentinel'])).includes(`slaves=1,sentinels=${count}`), FAILOVER_ATTEMPTS);
  }
  return { master, replica, sentinels };
}

/** The app on Redis through `sentinels` (in that order), the database serving while there is no master. */
const appOn = (...sentinels: RedisProcess[]) => ({
  SESSION_STORAGE: 'redis',
  SESSION_FALLBACK: 'database',
  REDIS_SENTINELS: sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`).join(','),
  REDIS_SENTINEL_NAME: MASTER_NAME,
  BREAKER_HALF_OPEN_AFTER_MS: '300',
});

describe('a Redis Sentinel failover under traffic', function () {
  this.timeout(180_000);
  let master: RedisProcess;
  let replica: RedisProcess;
  let sentinel: RedisProcess;
  let app: AppProcess;
  const users: User[] = [];
  /** Logged in and given data before the failover, then idle until it is over. */
  let idle: User;
  const failures: string[] = [];
  const lagged = new Set<number>();

  before(async () => {
    const setup = await startSentinelSetup();
    ({ master, replica } = setup);
    [sentinel] = setup.sentinels as [RedisProcess];
    app = await startApp({
      ...appOn(sentinel),
      SESSION_TOUCH_INTERVAL: '0',
      // Written through, so "with their data" can be checked exactly (as in fallback.test.ts).
      MIRROR_FLUSH_MS: '0',
    });
    for (let i = 0; i < 6; i++) {
      const client = new Client(app.url, `sentinel-${i}`);
      users.push({ client, userId: (await client.signup()).user.id, counter: 0 });
    }
    const idleClient = new Client(app.url, 'sentinel-idle');
    idle = { client: idleClient, userId: (await idleClient.signup()).user.id, counter: 41 };
    expect((await idleClient.patch('/api/session', { preferences: { counter: 41 } })).status).to.equal(200);
  });
  after(async () => {
    await app?.stop();
    await Promise.all([sentinel?.stop(), replica?.stop(), master?.stop()]);
  });

  const traffic = (rounds: number) => counterTraffic(users, rounds, failures, lagged);

  const backendOf = async (u: User) => ((await u.client.get('/api/session')).json as SessionBody).session?.backend;

  it('serves everyone from the master to begin with', async () => {
    await traffic(6);
    expect(failures).to.deep.equal([]);
    for (const u of [...users, idle]) expect(await backendOf(u)).to.equal('redis');
    expect(await masterPort(sentinel)).to.equal(master.port);
  });

  it('keeps everyone logged in, with their data, through the failover', async () => {
    // The idle user's session is on the replica before the master goes (replication is asynchronous).
    expect(await redisCommand(master.port, ['WAIT', '1', '5000'], 6000)).to.equal('1');
    const during = traffic(30);
    await new Promise((r) => setTimeout(r, 50));
    await master.kill();
    await during;
    await waitUntil('Sentinel to promote the replica', async () => (await masterPort(sentinel)) === replica.port, FAILOVER_ATTEMPTS);
    expect(await redisCommand(replica.port, ['INFO', 'replication'])).to.include('role:master');
    // Sessions move back to Redis (now the promoted replica) on their next requests.
    let where: Array<string | undefined> = [];
    for (let i = 0; i < 60; i++) {
      await traffic(3);
      where = await Promise.all(users.map(backendOf));
      if (where.every((b) => b === 'redis')) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect([...new Set(failures)]).to.deep.equal([]);
    expect(where).to.deep.equal(users.map(() => 'redis'));
  });

  it('serves an idle session from what the replica had, without moving it', async () => {
    const res = await idle.client.get('/api/session');
    expect(res.status).to.equal(200);
    const body = res.json as SessionBody;
    expect(body.user?.id).to.equal(idle.userId);
    expect(body.preferences?.counter).to.equal(41);
    expect(body.session?.backend).to.equal('redis');
  });

  it('counts the outage, and says Redis is up again on /readyz and /metrics', async () => {
    await waitUntil('/readyz to see Redis up', async () => ((await new Client(app.url).get('/readyz')).json.backends as Record<string, string>).redis === 'up', 200);
    const metrics = (await new Client(app.url).get('/metrics')).text;
    expect(sample(metrics, 'session_store_up', { backend: 'redis' })).to.equal(1);
    expect(sample(metrics, 'session_store_fallbacks_total', { from: 'redis', to: 'database' })).to.be.greaterThan(0);
    // The new master holds the sessions: the old one is gone, and the replica is all there is.
    expect(Number(await redisCommand(replica.port, ['DBSIZE']))).to.be.greaterThan(users.length);
  });
});

/**
 * The master hangs instead of dying (a paused host, a partition that keeps TCP up): its
 * connections stay open and nothing answers. Sentinel promotes the replica; the app must move to
 * it while the old master still hangs (it stayed on the hung one, Redis "down" on every instance,
 * until that came back: a Redis Cluster and Sentinel review).
 */
describe('a Redis Sentinel master that hangs with its connections open', function () {
  this.timeout(180_000);
  let master: RedisProcess;
  let replica: RedisProcess;
  let sentinels: RedisProcess[] = [];
  let app: AppProcess;

  before(async () => {
    // Three Sentinels, so that two can still elect a leader and fail over.
    ({ master, replica, sentinels } = await startSentinelSetup(3));
    // The first Sentinel named hangs as the app starts (its host paused): it takes connections
    // and answers nothing.
    await sentinels[0]!.pause(170_000);
    app = await startApp(appOn(...sentinels));
  });
  after(async () => {
    for (const server of [master, ...sentinels]) server?.resume();
    await app?.stop();
    await Promise.all([...sentinels.map((sentinel) => sentinel.stop()), replica?.stop(), master?.stop()]);
  });

  it('finds the master through the other Sentinels while the first one named hangs', async () => {
    // Asked where the master is without a deadline, the client waited on the hung Sentinel for
    // as long as it hung: Redis "down" from start-up on.
    await waitUntil('the app to reach the master', async () => ((await new Client(app.url).get('/readyz')).json.backends as Record<string, string>).redis === 'up', FAILOVER_ATTEMPTS);
    sentinels[0]!.resume();
  });

  it('is left for the promoted replica while it still hangs, with the Sentinel beside it (the first one named) hung too', async () => {
    const user = new Client(app.url, 'sentinel-hung');
    await user.signup();
    expect((await redisCommand(master.port, ['WAIT', '1', '5000'], 6000)).toString()).to.equal('1');
    // A paused host: the master and the Sentinel that runs beside it. That Sentinel, first in
    // REDIS_SENTINELS, takes a connection and never answers: asked where the master is without a
    // deadline, the client waited on it for as long as it hung.
    const [beside, ...others] = sentinels as [RedisProcess, RedisProcess, RedisProcess];
    await master.pause(170_000); // both resumed in `after`
    await beside.pause(170_000);
    await waitUntil('the other Sentinels to promote the replica', async () => (await masterPort(others[0])) === replica.port, FAILOVER_ATTEMPTS);
    await waitUntil(
      'the app to serve from the promoted replica',
      async () => ((await new Client(app.url).get('/readyz')).json.backends as Record<string, string>).redis === 'up',
      FAILOVER_ATTEMPTS,
    );
    const res = await user.get('/api/session');
    expect(res.status, 'nobody is logged out').to.equal(200);
    await waitUntil('the session back in Redis', async () => ((await user.get('/api/session')).json as SessionBody).session?.backend === 'redis', 200);
    // The instance channel's subscriber (its own connection) has left the hung master too.
    await waitUntil('the instance channel subscribed on the promoted replica', async () => /sub=[1-9]/.test(await redisCommand(replica.port, ['CLIENT', 'LIST', 'TYPE', 'pubsub'])), 200);
  });
});
