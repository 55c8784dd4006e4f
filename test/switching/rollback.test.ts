/**
 * An instance moves its sessions to Redis; Redis starts failing; the instance rolls itself
 * back to the database, says so, and stays there until an operator clears it. Every instance
 * sharing its database follows, across restarts.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startRedis, type RedisProcess } from '../support/redis-server.js';
import { sample } from './metrics-text.js';

const ADMIN_TOKEN = randomBytes(24).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A private Redis, an instance watching its rollouts closely (20 samples), and four logged-in users. */
async function startWatched(storage: 'database' | 'redis'): Promise<{ redis: RedisProcess; app: AppProcess; clients: Client[] }> {
  const redis = await startRedis();
  const app = await startApp({
    ADMIN_TOKEN,
    SESSION_STORAGE: storage,
    REDIS_URL: redis.url,
    ROLLBACK_MIN_SAMPLES: '20',
    ROLLBACK_WINDOW_SECONDS: '60',
    BREAKER_HALF_OPEN_AFTER_MS: '200',
    SESSION_TOUCH_INTERVAL: '0',
    // What these tests watch is the error-rate trigger: on a loaded machine a move to a new
    // Redis could be rolled back first for its latency (that trigger: test/flags/rollback.test.ts).
    ROLLBACK_LATENCY_FACTOR: '1000',
  });
  const clients: Client[] = [];
  for (let i = 0; i < 4; i++) {
    const c = new Client(app.url);
    await c.signup();
    clients.push(c);
  }
  return { redis, app, clients };
}

describe('automatic rollback on a failing new backend', function () {
  this.timeout(120_000);
  let redis: RedisProcess;
  let app: AppProcess;
  let clients: Client[] = [];
  const admin = () => new Client(app.url);
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };

  before(async () => {
    ({ redis, app, clients } = await startWatched('database'));
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });

  const traffic = async (rounds: number) => {
    const statuses: number[] = [];
    await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < rounds; i++) statuses.push((await c.get('/api/session')).status);
      }),
    );
    return statuses;
  };

  it('rolls back to the database when Redis errors, and nobody notices', async () => {
    // A baseline on the database, long enough for the guard to evaluate it (once a second).
    for (let i = 0; i < 15; i++) {
      await traffic(2);
      await sleep(100);
    }
    expect((await admin().put('/api/admin/flags/session-storage', { backend: 'redis' }, auth)).status).to.equal(200);
    expect(await traffic(6)).to.satisfy((s: number[]) => s.every((x) => x === 200));
    expect(((await clients[0]!.get('/api/session')).json.session as { backend: string }).backend).to.equal('redis');

    await redis.kill();
    let flags: Record<string, unknown> = {};
    for (let i = 0; i < 100; i++) {
      expect(await traffic(1)).to.satisfy((s: number[]) => s.every((x) => x === 200), 'requests keep succeeding');
      flags = (await admin().get('/api/admin/flags', auth)).json;
      if (flags.rollback) break;
      await sleep(100);
    }
    expect(flags.rollback).to.deep.include({ from: 'redis', to: 'database', trigger: 'error_rate' });
    expect(flags.value).to.equal('database');
    const metrics = (await admin().get('/metrics')).text;
    expect(sample(metrics, 'session_rollbacks_total', { from: 'redis', to: 'database', trigger: 'error_rate' })).to.equal(1);
    const ready = await admin().get('/readyz');
    expect(ready.json.rollback).to.deep.include({ from: 'redis', to: 'database' });
  });

  it('stays on the database after Redis recovers, until an operator clears it', async () => {
    await redis.restart();
    await sleep(500);
    await traffic(3);
    for (const c of clients) expect(((await c.get('/api/session')).json.session as { backend: string }).backend).to.equal('database');
    expect((await admin().delete('/api/admin/flags/session-storage', auth)).status).to.equal(204);
    const flags = (await admin().get('/api/admin/flags', auth)).json;
    expect(flags.rollback).to.equal(null);
    expect(flags.value).to.equal('database');
  });
});

describe('no automatic rollback when Redis, the configured backend, fails and comes back', function () {
  this.timeout(120_000);
  let redis: RedisProcess;
  let app: AppProcess;
  let clients: Client[] = [];
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };

  before(async () => {
    ({ redis, app, clients } = await startWatched('redis'));
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });

  const backendsNow = async () => Promise.all(clients.map(async (c) => ((await c.get('/api/session')).json.session as { backend: string }).backend));
  /** Requests until every session is back in Redis (they return lazily, on their next request). */
  const untilHome = async () => {
    let where: string[] = [];
    for (let i = 0; i < 100; i++) {
      where = await backendsNow();
      if (where.every((b) => b === 'redis')) break;
      await sleep(100);
    }
    return where;
  };

  it('sends the sessions home after each outage, and stays on Redis', async () => {
    for (let outage = 1; outage <= 2; outage++) {
      await redis.kill();
      // Long enough for the guard to evaluate (once a second) with the outage's errors in its window.
      for (let i = 0; i < 30; i++) {
        for (const c of clients) expect((await c.get('/api/session')).status, `outage ${outage}: nobody is logged out`).to.equal(200);
        await sleep(50);
      }
      await redis.restart();
      expect(await untilHome(), `after outage ${outage}`).to.deep.equal(['redis', 'redis', 'redis', 'redis']);
      // Enough calls on Redis for the guard to judge it (ROLLBACK_MIN_SAMPLES), before it fails again.
      for (let i = 0; i < 10; i++) for (const c of clients) expect((await c.get('/api/session')).status).to.equal(200);
    }
    const flags = (await new Client(app.url).get('/api/admin/flags', auth)).json;
    expect(flags.rollback, 'an outage is not a failed rollout').to.equal(null);
    const metrics = (await new Client(app.url).get('/metrics')).text;
    expect(sample(metrics, 'session_rollbacks_total', { from: 'redis', to: 'database', trigger: 'error_rate' })).to.equal(0);
  });
});

/**
 * Behind a load balancer, one instance rolled back and another not moved every session of the
 * rollout back and forth on every request that changed instance (an Unleash rollout review).
 */
describe('an automatic rollback on one instance, with another sharing its database', function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let redis: RedisProcess;
  let a: AppProcess;
  let b: AppProcess;
  const clients: Client[] = [];
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const flagsOn = async (app: AppProcess) => (await new Client(app.url).get('/api/admin/flags', auth)).json;
  /** A client of `a`, its cookie sent to `b`. */
  const onB = (c: Client) => {
    const copy = new Client(b.url);
    for (const [k, v] of c.cookies) copy.cookies.set(k, v);
    return copy;
  };
  async function eventually<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
    for (let i = 0; i < 200; i++) {
      const found = await check();
      if (found !== undefined) return found;
      await sleep(50);
    }
    throw new Error(`never happened: ${what}`);
  }

  before(async () => {
    db = await createTestDatabase('switchboard_rollback_shared');
    redis = await startRedis();
    const env = {
      ADMIN_TOKEN,
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      SESSION_SECRETS: randomBytes(32).toString('base64url'),
      SESSION_STORAGE: 'database',
      ROLLBACK_MIN_SAMPLES: '20',
      ROLLBACK_WINDOW_SECONDS: '60',
      BREAKER_HALF_OPEN_AFTER_MS: '200',
      SESSION_TOUCH_INTERVAL: '0',
      SYNC_INTERVAL_MS: '500',
    };
    // One after the other: both would run the migrations on the fresh database.
    a = await startApp(env);
    b = await startApp(env);
    for (let i = 0; i < 4; i++) {
      const c = new Client(a.url);
      await c.signup();
      clients.push(c);
    }
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    await db?.drop();
  });

  it('is followed by the other instance, at once and after its restart, until an operator clears it there', async () => {
    // A baseline on the database, on `a` only, long enough for its guard (which evaluates once a second).
    for (let i = 0; i < 15; i++) {
      await Promise.all(clients.map((c) => c.get('/api/session')));
      await sleep(100);
    }
    expect((await new Client(a.url).put('/api/admin/flags/session-storage', { backend: 'redis' }, auth)).status).to.equal(200);
    await eventually('the override reaches b', async () => ((await flagsOn(b)).value === 'redis' ? true : undefined));
    for (const c of clients) expect(((await c.get('/api/session')).json.session as { backend: string }).backend).to.equal('redis');
    // Enough calls on Redis for a's guard to judge it (ROLLBACK_MIN_SAMPLES) once it fails.
    for (let i = 0; i < 6; i++) await Promise.all(clients.map((c) => c.get('/api/session')));

    await redis.kill();
    const rolledBack = await eventually('a rolls back', async () => {
      for (const c of clients) expect((await c.get('/api/session')).status, 'nobody is logged out').to.equal(200);
      return ((await flagsOn(a)).rollback as Record<string, unknown> | null) ?? undefined;
    });
    expect(rolledBack).to.deep.include({ from: 'redis', to: 'database', trigger: 'error_rate', decidedHere: true });
    await redis.restart();
    await eventually('b has Redis again', async () => ((await new Client(b.url).get('/readyz')).json.backends as Record<string, string>).redis === 'up' || undefined);

    // b saw none of the errors; it follows a's decision. Without that, with Redis back, it would
    // move every session it serves back to Redis — and a would move it back again.
    const followed = await eventually('b follows', async () => ((await flagsOn(b)).rollback as Record<string, unknown> | null) ?? undefined);
    expect(followed).to.deep.include({ from: 'redis', to: 'database', trigger: 'error_rate', decidedHere: false });
    expect(followed.errorRatio, 'the measurements it was decided on').to.be.closeTo(rolledBack.errorRatio as number, 1e-5);
    expect((await flagsOn(b)).value).to.equal('database');
    for (const c of clients) {
      const res = await onB(c).get('/api/session');
      expect(res.status).to.equal(200);
      expect((res.json.session as { backend: string }).backend, 'served by b').to.equal('database');
    }
    const bMetrics = (await new Client(b.url).get('/metrics')).text;
    expect(sample(bMetrics, 'session_rollbacks_total', { from: 'redis', to: 'database', trigger: 'error_rate' }), 'counted where it was decided').to.equal(0);
    expect(b.output()).to.match(/following an automatic rollback decided by an instance sharing this database/);

    // A restart does not forget it: the instances would disagree again.
    await b.restart();
    expect((await flagsOn(b)).rollback).to.deep.include({ from: 'redis', to: 'database', decidedHere: false });
    expect(((await onB(clients[0]!).get('/api/session')).json.session as { backend: string }).backend).to.equal('database');

    // An operator's clear on b ends it on a too.
    expect((await new Client(b.url).delete('/api/admin/flags/session-storage', auth)).status).to.equal(204);
    expect((await flagsOn(b)).rollback).to.equal(null);
    await eventually('a hears the operator', async () => ((await flagsOn(a)).rollback === null ? true : undefined));
    // …and for good: neither instance reads the old rollback back (b restarted once more).
    await sleep(1500);
    await b.restart();
    expect((await flagsOn(a)).rollback).to.equal(null);
    expect((await flagsOn(b)).rollback).to.equal(null);
  });
});
