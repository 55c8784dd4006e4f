/**
 * An instance moves its sessions to Redis; Redis starts failing; the instance rolls itself
 * back to the database, says so, and stays there until an operator clears it.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
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
