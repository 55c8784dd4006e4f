/**
 * Signing up while the chosen backend (Redis) cannot be reached, before its breaker opens: the
 * answer names the backend that really holds the session, and a signup that no backend could
 * take leaves no account behind, so the client's retry is not refused as `email_taken`.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { freePort } from '../support/ports.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { sample } from '../switching/metrics-text.js';
import { expectError, GOOD_PASSWORD, uniqueEmail } from './helpers.js';

/** Redis on a loopback port nobody listens on; the breaker kept closed, so every write tries it. */
async function unreachableRedis(extra: Record<string, string>): Promise<Record<string, string>> {
  return { SESSION_STORAGE: 'redis', REDIS_URL: `redis://127.0.0.1:${await freePort()}/0`, BREAKER_FAILURE_THRESHOLD: '1000', ...extra };
}

describe('signing up while Redis cannot be reached', function () {
  this.timeout(60_000);

  describe('with the database as fallback', () => {
    let app: AppProcess;
    before(async () => {
      app = await startApp(await unreachableRedis({ SESSION_FALLBACK: 'database' }));
    });
    after(() => app?.stop());

    it('says the session is in the database, where it is, in every answer', async () => {
      const user = new Client(app.url);
      const signup = await user.post('/api/signup', { email: uniqueEmail('fallback'), password: GOOD_PASSWORD, name: 'F' });
      expect(signup.status, signup.text).to.equal(201);
      expect(user.sessionCookie(), 'a database cookie').to.match(/^d\./);
      expect((signup.json.session as { backend: string }).backend).to.equal('database');
      const session = await user.get('/api/session');
      expect(session.status, session.text).to.equal(200);
      expect((session.json.session as { backend: string }).backend).to.equal('database');
      const listed = await user.get('/api/sessions');
      expect((listed.json.sessions as Array<{ backend: string; current: boolean }>).map((s) => [s.backend, s.current])).to.deep.equal([['database', true]]);
    });
  });

  describe('found through Sentinels (REDIS_SENTINELS), none of which answers', () => {
    let app: AppProcess;
    before(async () => {
      app = await startApp({ ...(await unreachableRedis({ SESSION_FALLBACK: 'database' })), REDIS_SENTINELS: `127.0.0.1:${await freePort()}`, REDIS_SENTINEL_NAME: 'sessions' });
    });
    after(() => app?.stop());

    it("names REDIS_SENTINELS in its warning, not REDIS_URL, whose host is not used", async () => {
      const warnings = () => app.output().split('\n').filter((l) => l.includes('redis connection error'));
      await waitUntil('a Redis connection warning', () => warnings().length > 0, 200);
      expect(warnings().map((l) => (JSON.parse(l) as { variable: string }).variable)).to.deep.equal(['REDIS_SENTINELS']);
    });
  });

  describe('with no fallback', () => {
    let app: AppProcess;
    before(async () => {
      app = await startApp(await unreachableRedis({ SESSION_FALLBACK: 'none', BREAKER_FAILURE_THRESHOLD: '3', BREAKER_HALF_OPEN_AFTER_MS: '100' }));
    });
    after(() => app?.stop());

    it('answers 503 and creates no account, so a retry gets 503 again rather than 409, and the login knows no such user', async () => {
      const email = uniqueEmail('nofallback');
      for (const attempt of [1, 2]) {
        const res = await new Client(app.url).post('/api/signup', { email, password: GOOD_PASSWORD, name: 'N' });
        expectError(res, 503, 'service_unavailable');
        expect(res.headers.get('retry-after'), `attempt ${attempt}`).to.be.a('string');
      }
      expectError(await new Client(app.url).login(email, GOOD_PASSWORD), 401, 'invalid_credentials');
    });

    it('logs the 503s of an outage a line a second, not a line a request, each counted, and the outage once', async () => {
      const lines = (text: string) => app.output().split('\n').filter((l) => l.includes(text));
      const before = lines('no session backend could serve').length;
      const answers = await Promise.all(Array.from({ length: 30 }, () => new Client(app.url).signup().catch((err: Error) => err.message)));
      expect(answers.every((a) => typeof a === 'string' && a.startsWith('signup failed: 503'))).to.equal(true);
      // However fast the batch went (passwords hash quickly on some machines): the last of them
      // are told a second after the line before.
      const told = () => lines('no session backend could serve').slice(before).reduce((n, l) => n + (JSON.parse(l) as { requests: number }).requests, 0);
      await waitUntil('every 503 counted in the log', () => told() >= 30, 100);
      expect(lines('no session backend could serve').length - before).to.be.within(1, 29);
      // The breaker's probe (every 100 ms here) failing again and again is one outage.
      expect(lines('unavailable: circuit open')).to.have.length(1);
    });
  });
});

describe('a login that no backend can store', function () {
  this.timeout(60_000);
  let redis: RedisProcess;
  let app: AppProcess;
  before(async () => {
    redis = await startRedis();
    app = await startApp({ SESSION_STORAGE: 'redis', SESSION_FALLBACK: 'none', REDIS_URL: redis.url, SESSION_MAX_PER_USER: '2' });
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });

  const successes = async () => sample((await new Client(app.url).get('/metrics')).text, 'auth_logins_total', { outcome: 'success' });

  it('ends none of the user’s sessions (not even to keep the per-user limit), is not counted a success, and counts no fallback', async () => {
    const first = new Client(app.url);
    const { email, password } = await first.signup();
    const second = new Client(app.url);
    expect((await second.login(email, password)).status).to.equal(200);
    const before = await successes();

    await redis.stop();
    // At the limit: a stored third session would end the oldest (`first`). This one cannot be stored.
    expectError(await new Client(app.url).login(email, password), 503, 'service_unavailable');
    expect(await successes()).to.equal(before);
    // No fallback configured: a request of a Redis session fails (503, not a logout), and no
    // fallback is counted, since none happens.
    expectError(await first.get('/api/session'), 503, 'service_unavailable');
    expect(sample((await new Client(app.url).get('/metrics')).text, 'session_store_fallbacks_total')).to.equal(0);

    await redis.restart(); // empty: the sessions come back from their database copies
    for (const [who, client] of [['first', first], ['second', second]] as const) {
      await waitUntil(`${who} served again`, async () => (await client.get('/api/session')).status === 200, 100);
    }
    // And the limit still holds once a login succeeds.
    expect((await new Client(app.url).login(email, password)).status).to.equal(200);
    expect(await successes()).to.equal(before + 1);
    expect((await first.get('/api/session')).status).to.equal(401);
    expect((await second.get('/api/session')).status).to.equal(200);
  });
});

describe('a Redis that comes up without the database REDIS_URL names', function () {
  this.timeout(60_000);
  let redis: RedisProcess | undefined;
  let app: AppProcess;
  let port: number;
  before(async () => {
    port = await freePort();
    // Down at start-up, so start-up cannot judge the database and goes on.
    app = await startApp({ SESSION_STORAGE: 'redis', SESSION_FALLBACK: 'database', REDIS_URL: `redis://127.0.0.1:${port}/3` });
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });

  it('says so once, as an error naming REDIS_URL, and keeps sessions out of database 0: the fallback holds them', async () => {
    redis = await startRedis({ port, extraArgs: () => ['--databases', '2'] });
    const told = () => app.output().split('\n').filter((l) => l.includes('REDIS_URL: Redis has no database 3'));
    await waitUntil('the refused SELECT reported', async () => told().length > 0, 100);
    const user = new Client(app.url);
    await user.signup();
    expect(user.sessionCookie(), 'a database cookie').to.match(/^d\./);
    expect((await user.get('/api/session')).status).to.equal(200);
    expect(await redisCommand(port, ['DBSIZE'])).to.equal('0');
    expect(told()).to.have.length(1);
  });
});
