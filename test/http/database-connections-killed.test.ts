/**
 * The database backend's connections ended all at once while requests run on them — a pooler
 * restarted, an operator's `pg_terminate_backend`, a failover's cut — is one event, not a
 * dozen failures: the requests in flight on them fail (503), and the next ones are served on
 * new connections. Counted one by one, those failures opened the breaker, and with the
 * database as its own last resort every user got 503 for BREAKER_HALF_OPEN_AFTER_MS.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { expectError, GOOD_PASSWORD } from './helpers.js';
import { connectPostgres, createTestDatabase, ensureServices, type TestDatabase } from '../support/postgres.js';
import { waitUntil } from '../support/redis-server.js';
import { sample } from '../switching/metrics-text.js';

const USERS = 20;
const KILLS = 4;

describe('the database backend when its connections are killed under traffic', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let app: AppProcess;
  before(async () => {
    await ensureServices();
    db = await createTestDatabase('killed');
    app = await startApp({ SESSION_STORAGE: 'database', DATABASE_URL: db.url, SESSION_TOUCH_INTERVAL: '1', BREAKER_FAILURE_THRESHOLD: '5' });
  });
  after(async () => {
    await app?.stop();
    await db?.drop();
  });

  it('fails only the requests that were on them, and opens no breaker', async () => {
    const users = await Promise.all(Array.from({ length: USERS }, async () => {
      const user = new Client(app.url);
      await user.signup();
      return user;
    }));
    const admin = await connectPostgres(db.url);
    admin.on('error', () => undefined);
    // Each user reads and changes its session in a loop; `answered` counts per status.
    const answered = new Map<number, number>();
    let killed = 0;
    let running = true;
    const traffic = users.map(async (user) => {
      for (let n = 0; running; n++) {
        const res = n % 2 ? await user.get('/api/session') : await user.patch('/api/session', { preferences: { n } });
        answered.set(res.status, (answered.get(res.status) ?? 0) + 1);
        if (res.status === 503) expect(res.json.error, res.text).to.deep.include({ code: 'service_unavailable' });
        else expect(res.status, res.text).to.equal(200);
      }
    });
    try {
      for (let k = 0; k < KILLS; k++) {
        // Enough answers between kills that the loops have all started over on new connections.
        const before = answered.get(200) ?? 0;
        while ((answered.get(200) ?? 0) < before + USERS * 5) await new Promise((r) => setTimeout(r, 20));
        const res = await admin.query('SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [db.name]);
        killed += Number(res.rows[0]!.n);
      }
      const before = answered.get(200) ?? 0;
      while ((answered.get(200) ?? 0) < before + USERS * 5) await new Promise((r) => setTimeout(r, 20));
    } finally {
      running = false;
      await Promise.all(traffic);
      await admin.end();
    }
    expect(killed, 'connections killed').to.be.greaterThan(KILLS);
    expect(app.output(), 'the log').not.to.include('unavailable: circuit open');
    // At most the requests in flight on the killed connections: one per user per kill.
    expect(answered.get(503) ?? 0, JSON.stringify([...answered])).to.be.at.most(USERS * KILLS);
  });
});

describe('the database turning read-only (a standby after a failover, default_transaction_read_only)', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let app: AppProcess;
  before(async () => {
    await ensureServices();
    db = await createTestDatabase('readonly');
    // Any failure counted by the breaker opens it: a failed write check must not be one.
    app = await startApp({ SESSION_STORAGE: 'database', DATABASE_URL: db.url, BREAKER_FAILURE_THRESHOLD: '1' });
  });
  after(async () => {
    await app?.stop();
    await db?.drop();
  });

  it('says so in /readyz and session_store_up while every write fails, serves reads meanwhile, and is up again once it takes writes', async () => {
    const admin = await connectPostgres(db.url);
    admin.on('error', () => undefined);
    const readOnly = async (on: boolean) => {
      await admin.query(`ALTER DATABASE ${db.name} ${on ? 'SET default_transaction_read_only = on' : 'RESET default_transaction_read_only'}`);
      // Sessions keep the setting they started with: the app's connections are made again.
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [db.name]);
    };
    const health = async () => ((await new Client(app.url).get('/readyz')).json.backends as Record<string, string>).database;
    const up = async () => sample(await (await fetch(`${app.url}/metrics`)).text(), 'session_store_up', { backend: 'database' });
    try {
      const user = new Client(app.url);
      await user.signup({ password: GOOD_PASSWORD });
      expect(await health()).to.equal('up');
      await readOnly(true);
      await waitUntil('readiness says the database is down', async () => (await health()) === 'down', 200);
      const ready = await new Client(app.url).get('/readyz');
      expect([ready.status, ready.json.status], 'reads are served: degraded, not taken out of the load balancer').to.deep.equal([200, 'degraded']);
      await waitUntil('session_store_up{backend="database"} 0', async () => (await up()) === 0, 300);
      expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status, 'a change').to.equal(503);
      expect((await user.get('/api/session')).status, 'a read').to.equal(200);
      // What writes elsewhere in the database answers 503 as well, not 500 internal_error.
      expectError(await new Client(app.url).post('/api/signup', { email: `ro-${Date.now()}@example.com`, password: GOOD_PASSWORD, name: 'R O' }), 503, 'service_unavailable');
      expectError(await user.post('/api/platforms', { name: 'Read-only', type: 'web' }), 503, 'service_unavailable');
      expectError(await user.post('/api/password', { currentPassword: GOOD_PASSWORD, newPassword: 'another long passphrase' }), 503, 'service_unavailable');
      expect(app.output(), 'the log').not.to.include('unhandled error');

      await readOnly(false);
      await waitUntil('readiness says up again', async () => (await health()) === 'up', 200);
      await waitUntil('session_store_up{backend="database"} 1', async () => (await up()) === 1, 300);
      expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status, 'a change, once it takes writes').to.equal(200);
    } finally {
      await admin.query(`ALTER DATABASE ${db.name} RESET default_transaction_read_only`).catch(() => undefined);
      await admin.end();
    }
  });
});
