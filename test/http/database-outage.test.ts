/**
 * The database going away under the redis and cookie backends, which serve sessions without
 * it: a logout and an operator's "log out everybody" made meanwhile still hold — on this
 * instance at once, after a restart, and once the database is back — what needs the database
 * answers 503 rather than 500, and the metrics and /readyz say the database is down.
 * PostgreSQL is reached through a TCP link the test cuts and restores.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { createLinkedDatabase, type LinkedDatabase } from '../support/linked-database.js';
import { connectPostgres, ensureServices, withPostgres, type PgClient } from '../support/postgres.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { sample } from '../switching/metrics-text.js';
import { ADMIN_TOKEN, expectError, GOOD_PASSWORD, redisEnv, uniqueEmail } from './helpers.js';

const bearer = { Authorization: `Bearer ${ADMIN_TOKEN}` };

for (const backend of ['redis', 'cookie'] as const) {
  describe(`the database down under the ${backend} backend`, function () {
    this.timeout(120_000);
    let db: LinkedDatabase;
    let app: AppProcess;
    let env: Record<string, string>;

    before(async () => {
      await ensureServices();
      db = await createLinkedDatabase('outage');
      env = { SESSION_STORAGE: backend, ...redisEnv(), ADMIN_TOKEN, DATABASE_URL: db.appUrl, SYNC_INTERVAL_MS: '200' };
      app = await startApp(env);
    });
    after(async () => {
      await app?.stop();
      await db?.close();
    });

    const stillIn = async (cookie: string) => {
      const c = new Client(app.url);
      c.cookies.set('sid', cookie);
      return (await c.get('/api/session')).status;
    };
    /** How many revocation spools (Redis hashes of entries the database has not taken yet) exist. */
    const spools = async () => Number(await redisCommand(6379, ['EVAL', "return #redis.call('KEYS', ARGV[1])", '0', `${env.REDIS_KEY_PREFIX}*revocations:held`]));
    /** How many sessions' logouts the database holds. */
    const logouts = async (pg: PgClient) => Number((await pg.query("SELECT count(*) AS n FROM revocations WHERE kind = 'session'")).rows[0]!.n);
    /** Redis loses the spool (an eviction, a restart without persistence). */
    const dropHeld = () => redisCommand(6379, ['EVAL', "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 0", '0', `${env.REDIS_KEY_PREFIX}*revocations:held`]);

    it('keeps a logout and a revoke-all made meanwhile, across a restart and after it is back; 503 for what needs it', async () => {
      const leaving = new Client(app.url);
      await leaving.signup();
      const stolen = leaving.sessionCookie()!;
      const staying = new Client(app.url);
      const { email } = await staying.signup();
      const other = staying.sessionCookie()!;

      await db.cut();
      // Sessions go on: they are served from where they live.
      expect((await staying.get('/api/session')).status).to.equal(200);

      const logout = await leaving.post('/api/logout');
      expect(logout.status, logout.text).to.equal(204);
      expect(await stillIn(stolen), 'the logged-out cookie, at once').to.equal(401);

      // What needs the database is unavailable, not broken.
      expectError(await new Client(app.url).login(email, GOOD_PASSWORD), 503, 'service_unavailable');
      expectError(await new Client(app.url).post('/api/signup', { email: uniqueEmail('outage'), password: GOOD_PASSWORD, name: 'O' }), 503, 'service_unavailable');

      // The gauge follows without anyone calling /readyz; then /readyz says degraded.
      await waitUntil('session_store_up{backend="database"} 0', async () => sample(await (await fetch(`${app.url}/metrics`)).text(), 'session_store_up', { backend: 'database' }) === 0, 300);
      const ready = await new Client(app.url).get('/readyz');
      expect(ready.status).to.equal(200);
      expect(ready.json).to.include({ status: 'degraded' });
      expect((ready.json.backends as Record<string, string>).database).to.equal('down');

      const revokeAll = await new Client(app.url).post('/api/admin/sessions/revoke-all', {}, bearer);
      expect(revokeAll.status, revokeAll.text).to.equal(200);
      expect(await stillIn(other), 'revoked by revoke-all, at once').to.equal(401);
      expect(await spools(), 'held in Redis meanwhile').to.equal(1);

      // A restart while the database is still down: the entries held in Redis are applied at start.
      await db.restore();
      await app.restart();
      await db.cut();
      expect(await stillIn(stolen), 'the logged-out cookie, after a restart').to.equal(401);
      expect(await stillIn(other), 'the revoked cookie, after a restart').to.equal(401);

      // Back: the entries move into the database, Redis lets them go, and they hold from there.
      await db.restore();
      await waitUntil('the held revocations moved into the database', async () => (await spools()) === 0, 300);
      await app.restart();
      expect(await stillIn(stolen), 'the logged-out cookie, from the database').to.equal(401);
      expect(await stillIn(other), 'the revoked cookie, from the database').to.equal(401);
      await waitUntil('session_store_up{backend="database"} 1', async () => sample(await (await fetch(`${app.url}/metrics`)).text(), 'session_store_up', { backend: 'database' }) === 1, 300);
      expect((await new Client(app.url).login(email, GOOD_PASSWORD)).status).to.equal(200);
    });

    it('keeps a logout made meanwhile when Redis then loses what it held: the instance that heard it writes it once the database is back', async () => {
      await withPostgres(db.url, async (pg) => {
        const leaving = new Client(app.url);
        await leaving.signup();
        const stolen = leaving.sessionCookie()!;
        const before = await logouts(pg);
        await db.cut();
        expect((await leaving.post('/api/logout')).status).to.equal(204);
        expect(await spools(), 'held in Redis meanwhile').to.equal(1);
        // Redis restarted empty (no persistence, as this machine's Redis runs): the held entry is gone.
        await dropHeld();
        expect(await stillIn(stolen), 'still refused here, from memory').to.equal(401);

        await db.restore();
        await waitUntil('the logout written to the database', async () => (await logouts(pg)) > before, 300);
        await app.restart();
        expect(await stillIn(stolen), 'the logged-out cookie, after a restart').to.equal(401);
      });
    });

    it('writes the audit rows of what was done meanwhile once it is back, dated when it was done', async () => {
      const leaving = new Client(app.url);
      await leaving.signup();
      const handle = ((await leaving.get('/api/session')).json.session as { handle: string }).handle;
      const { user } = await new Client(app.url).signup();
      await db.cut();
      const loggedOutAt = Date.now();
      try {
        expect((await leaving.post('/api/logout')).status).to.equal(204);
        expectError(await new Client(app.url).request('DELETE', `/api/admin/users/${user.id}/sessions`, undefined, bearer), 503, 'service_unavailable');
      } finally {
        await db.restore();
      }
      await withPostgres(db.url, async (pg) => {
        const rows = async () => (await pg.query('SELECT type, reason, created_at FROM session_events WHERE handle = $1 ORDER BY id', [handle])).rows;
        await waitUntil('the logout’s audit row written', async () => (await rows()).length === 2, 300);
        const [created, ended] = await rows();
        expect(created).to.include({ type: 'created' });
        expect(ended).to.include({ type: 'destroyed', reason: 'logout' });
        expect(new Date(ended!.created_at as string).getTime(), 'dated at the logout, not at the write').to.be.within(loggedOutAt - 1000, loggedOutAt + 2000);
        const admin = await pg.query("SELECT id, actor, count FROM session_events WHERE user_id = $1 AND type = 'revoked' AND reason = 'admin'", [user.id]);
        expect(admin.rows.map(({ actor, count }) => ({ actor, count })), 'the admin’s log-out, uncounted').to.deep.equal([{ actor: 'admin', count: 0 }]);
        const ids = (await pg.query('SELECT id FROM session_events WHERE handle = $1 ORDER BY id', [handle])).rows.map((r) => Number(r.id));
        expect(ids[1], 'written in the order they happened').to.be.below(Number(admin.rows[0]!.id));
      });
    });

    it('keeps a logout made meanwhile when Redis loses what it held and the instance that heard it restarts before the database is back', async () => {
      const leaving = new Client(app.url);
      await leaving.signup();
      const stolen = leaving.sessionCookie()!;
      await db.cut();
      try {
        expect((await leaving.post('/api/logout')).status).to.equal(204);
        expect(await spools(), 'held in Redis meanwhile').to.equal(1);
        // Lost from Redis (evicted under an allkeys-* policy, or a restart without persistence),
        // then a redeploy: the instance's memory of the logout ends with it. (Start-up needs the
        // database, so it is back for the new process.)
        await dropHeld();
      } finally {
        await app.restart({}, () => db.restore());
      }
      await waitUntil('the held logout moved into the database', async () => (await spools()) === 0, 300);
      expect(await stillIn(stolen), 'the logged-out cookie, after the restart').to.equal(401);
      await app.restart();
      expect(await stillIn(stolen), 'the logged-out cookie, from the database').to.equal(401);
    });

    it('keeps a logout held meanwhile when Redis loses it after the instance that took it has stopped: another instance that read it writes it', async () => {
      const other = await startApp(env);
      const pg = await connectPostgres(db.url);
      pg.on('error', () => undefined);
      try {
        const leaving = new Client(app.url);
        await leaving.signup();
        const stolen = leaving.sessionCookie()!;
        const before = await logouts(pg);
        await db.cut();
        try {
          expect((await leaving.post('/api/logout')).status).to.equal(204);
          expect(await spools(), 'held in Redis meanwhile').to.equal(1);
          // The other instance's poll (every SYNC_INTERVAL_MS, 200 ms here) reads the hash.
          await new Promise((resolve) => setTimeout(resolve, 1000));
        } finally {
          await app.restart({}, async () => {
            // The instance that took the logout is gone; then Redis loses the hash (evicted, restarted).
            await dropHeld();
            await db.restore();
            await waitUntil('the logout written to the database by the other instance', async () => (await logouts(pg)) > before, 300);
          });
        }
        expect(await stillIn(stolen), 'the logged-out cookie, after the restart').to.equal(401);
      } finally {
        await other.stop();
        await pg.end();
      }
    });

    if (backend === 'redis') {
      it('answers 503, not 401, for a session Redis lost while the database cannot be asked: nobody is logged out', async () => {
        const user = new Client(app.url);
        await user.signup();
        await db.cut();
        try {
          // Redis restarted empty: only the session's database copy is left, and it cannot be read now.
          await redisCommand(6379, ['EVAL', "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 0", '0', `${env.REDIS_KEY_PREFIX}*`]);
          expectError(await user.get('/api/session'), 503, 'service_unavailable');
          expectError(await user.patch('/api/session', { preferences: { theme: 'dark' } }), 503, 'service_unavailable');
          expectError(await user.post('/api/logout'), 503, 'service_unavailable');
          expect(user.sessionCookie(), 'the browser keeps its cookie').to.be.a('string');
          expect((await user.get('/', { Accept: 'text/html' })).status, 'the dashboard: not a trip to /login').to.equal(503);
          // What needs no session is served as to anybody.
          expect((await user.get('/healthz')).status).to.equal(200);
          expect((await user.get('/login', { Accept: 'text/html' })).status).to.equal(200);
          // A forged cookie is known not to be a session without asking anyone: its signature does not verify.
          const forged = new Client(app.url);
          forged.cookies.set('sid', `r.${'A'.repeat(43)}.${'A'.repeat(22)}`);
          expectError(await forged.get('/api/session'), 401, 'unauthenticated');
        } finally {
          await db.restore();
        }
        await waitUntil('the session served from its database copy', async () => (await user.get('/api/session')).status === 200, 300);
      });

      it('writes the copies of the changes made meanwhile once it is back: Redis losing the session later loses none of them', async () => {
        await withPostgres(db.url, async (pg) => {
          const user = new Client(app.url);
          const { user: who } = await user.signup();
          const copyVersion = async () => Number((await pg.query('SELECT version FROM sessions WHERE user_id = $1', [who.id])).rows[0]?.version);
          const before = await copyVersion();
          const failedCopies = async () => sample((await new Client(app.url).get('/metrics')).text, 'session_store_operations_total', { backend: 'database', operation: 'save', outcome: 'error' });
          const failedBefore = await failedCopies();
          await db.cut();
          try {
            for (let n = 1; n <= 3; n++) expect((await user.patch('/api/session', { preferences: { counter: n } })).status).to.equal(200);
            // Written behind: the database is still away when the batch with the three changes fails.
            await waitUntil('the copy of the changes to fail', async () => (await failedCopies()) > failedBefore, 300);
          } finally {
            await db.restore();
          }
          // Nobody changes the session after the outage: only a retry of the failed copies can write them.
          await waitUntil('the copy to catch up with the three changes', async () => (await copyVersion()) === before + 3, 300);
          // Redis restarted empty: the copy is all there is.
          await redisCommand(6379, ['EVAL', "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 0", '0', `${env.REDIS_KEY_PREFIX}*`]);
          const res = await user.get('/api/session');
          expect(res.status, res.text).to.equal(200);
          expect(res.json.preferences).to.deep.equal({ counter: 3 });
        });
      });
    }

    it('does not wait on a database that stops answering: a logout and a revoke-all are held in Redis, and hold', async () => {
      const leaving = new Client(app.url);
      await leaving.signup();
      const stolen = leaving.sessionCookie()!;
      // Connections stay open, nothing comes back (a failover, a partition): no error to react to.
      db.stall();
      try {
        const logout = await leaving.post('/api/logout');
        expect(logout.status, logout.text).to.equal(204);
        expect(await stillIn(stolen), 'the logged-out cookie, at once').to.equal(401);
        const revokeAll = await new Client(app.url).post('/api/admin/sessions/revoke-all', {}, bearer);
        expect(revokeAll.status, revokeAll.text).to.equal(200);
        expect(await spools(), 'held in Redis meanwhile').to.equal(1);
      } finally {
        await db.restore();
      }
      await waitUntil('the held revocations moved into the database', async () => (await spools()) === 0, 300);
      await app.restart();
      expect(await stillIn(stolen), 'the logged-out cookie, from the database').to.equal(401);
    });

    if (backend === 'cookie') {
      it('moves a cookie session to Redis while the database stops answering, without waiting for it', async function () {
        // The bound is PostgreSQL's query timeout (QUERY_TIMEOUT_MS, 30 s), which a move waiting on
        // its directory entry would sit out; the move's own wait for the copy is 2 s.
        this.timeout(20_000);
        const admin = new Client(app.url);
        const user = new Client(app.url);
        await user.signup();
        expect(user.sessionCookie()).to.match(/^c\./);
        expect((await admin.put('/api/admin/flags/session-storage', { backend: 'redis' }, bearer)).status).to.equal(200);
        db.stall();
        try {
          const res = await user.get('/api/session');
          expect(res.status, res.text).to.equal(200);
          expect((res.json.session as { backend: string }).backend).to.equal('redis');
          expect(user.sessionCookie(), 'the cookie points at Redis').to.match(/^r\./);
        } finally {
          await db.restore();
          await admin.delete('/api/admin/flags/session-storage', bearer);
        }
        expect((await user.get('/api/session')).status).to.equal(200);
      });
    }

    if (backend === 'redis') {
      // Last: it stops the app.
      it('says at a stop how many sessions’ latest changes did not reach their database copy', async () => {
        const user = new Client(app.url);
        await user.signup();
        const failedCopies = async () => sample((await new Client(app.url).get('/metrics')).text, 'session_store_operations_total', { backend: 'database', operation: 'save', outcome: 'error' });
        const failedBefore = await failedCopies();
        await db.cut();
        try {
          expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status).to.equal(200);
          await waitUntil('the copy of the change to fail', async () => (await failedCopies()) > failedBefore, 300);
          await app.stop();
        } finally {
          await db.restore();
        }
        expect(app.output()).to.match(/"sessions":1\b.*latest changes are not in their database copy at shutdown/);
      });
    }
  });
}

/**
 * A logout that nothing can record — the database down, and Redis, which would hold the
 * revocation until the database is back, down too — did not happen: 503. The browser must keep
 * its cookie then, or the page could neither say so usefully nor try again, while the session
 * went on working for whoever else holds the cookie.
 */
describe('a logout that neither the database nor Redis can record (cookie backend)', function () {
  this.timeout(120_000);
  let db: LinkedDatabase;
  let redis: RedisProcess;
  let app: AppProcess;

  before(async () => {
    await ensureServices();
    db = await createLinkedDatabase('outage_logout');
    redis = await startRedis();
    app = await startApp({ SESSION_STORAGE: 'cookie', REDIS_URL: redis.url, DATABASE_URL: db.appUrl, SYNC_INTERVAL_MS: '200' });
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
    await db?.close();
  });

  it('answers 503 and leaves the cookie; the retry, once they are back, logs out', async () => {
    const user = new Client(app.url);
    await user.signup();
    const cookie = user.sessionCookie()!;
    await db.cut();
    await redis.stop();
    const failed = await user.post('/api/logout');
    expectError(failed, 503, 'service_unavailable');
    expect(failed.headers.getSetCookie().filter((line) => line.startsWith('sid=')), 'no cookie cleared').to.deep.equal([]);
    expect(user.sessionCookie()).to.equal(cookie);

    await db.restore();
    await redis.restart();
    await waitUntil('the app has its database and Redis back', async () => {
      const ready = await new Client(app.url).get('/readyz');
      const backends = ready.json.backends as Record<string, string> | undefined;
      return backends?.database === 'up' && backends.redis === 'up';
    }, 300);
    expect((await user.get('/api/session')).status, 'the logout did not happen').to.equal(200);
    expect((await user.post('/api/logout')).status).to.equal(204);
    const thief = new Client(app.url);
    thief.cookies.set('sid', cookie);
    expect((await thief.get('/api/session')).status).to.equal(401);
  });
});

/**
 * The database down under the database backend: its sessions cannot be read, so they are
 * unknown (503) — but one logged out before the outage is known to be over without its row,
 * from the revocation list every instance holds in memory, and stays a 401.
 */
describe('the database down under the database backend', function () {
  this.timeout(120_000);
  let db: LinkedDatabase;
  let app: AppProcess;

  before(async () => {
    await ensureServices();
    db = await createLinkedDatabase('outage_db');
    app = await startApp({ SESSION_STORAGE: 'database', ...redisEnv(), DATABASE_URL: db.appUrl, SYNC_INTERVAL_MS: '200' });
  });
  after(async () => {
    await app?.stop();
    await db?.close();
  });

  it('answers 401 for a session logged out before the outage, 503 for a live one, and serves it once back', async () => {
    const leaving = new Client(app.url);
    await leaving.signup();
    const stolen = leaving.sessionCookie()!;
    expect((await leaving.post('/api/logout')).status).to.equal(204);
    const staying = new Client(app.url);
    await staying.signup();
    const thief = new Client(app.url);
    thief.cookies.set('sid', stolen);

    await db.cut();
    try {
      expectError(await thief.get('/api/session'), 401, 'unauthenticated');
      expectError(await staying.get('/api/session'), 503, 'service_unavailable');
      expect(staying.sessionCookie(), 'the browser keeps its cookie').to.be.a('string');
      // The dashboard opened in a tab: a page that says so, not the API's JSON.
      const page = await staying.get('/', { 'Sec-Fetch-Dest': 'document' });
      expect(page.status).to.equal(503);
      expect(page.headers.get('content-type')).to.match(/^text\/html/);
      expect(page.headers.get('retry-after')).to.equal('1');
      expect(page.text).to.include('You are still signed in');
    } finally {
      await db.restore();
    }
    await waitUntil('the session served again', async () => (await staying.get('/api/session')).status === 200, 300);
    expectError(await thief.get('/api/session'), 401, 'unauthenticated');
  });
});
