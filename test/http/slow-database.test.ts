/**
 * A slow database under the cookie backend is the database's slowness, not the cookie's: a
 * logout's revocation is written once, by the app, under no cookie deadline. (The cookie store
 * wrote it a second time inside its own guard, so a database slower than STORE_TIMEOUT_MS was
 * counted as the cookie backend timing out — its error ratio, its breaker, its rollback.)
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { createLinkedDatabase, type LinkedDatabase } from '../support/linked-database.js';
import { ensureServices, withPostgres } from '../support/postgres.js';
import { sample } from '../switching/metrics-text.js';
import { ADMIN_TOKEN, expectError } from './helpers.js';

describe('a slow database under the cookie backend', function () {
  this.timeout(120_000);
  let db: LinkedDatabase;
  let app: AppProcess;
  before(async () => {
    await ensureServices();
    // Every answer of the database 400 ms late: past the cookie's 250 ms deadline (tests' STORE_TIMEOUT_MS).
    db = await createLinkedDatabase('slowdb', 400);
    // The database backend's own deadline (a listing's) short too: every answer misses it.
    app = await startApp({ SESSION_STORAGE: 'cookie', REDIS_URL: 'none', DATABASE_URL: db.appUrl, ADMIN_TOKEN, LAST_RESORT_TIMEOUT_MS: '100' });
  });
  after(async () => {
    await app?.stop();
    await db?.close();
  });

  it('logs a cookie session out without counting the database’s slowness against the cookie backend', async () => {
    const user = new Client(app.url);
    await user.signup();
    const cookie = user.sessionCookie()!;
    expect(cookie).to.match(/^c\./);
    const logout = await user.post('/api/logout');
    expect(logout.status, logout.text).to.equal(204);

    const stale = new Client(app.url);
    stale.cookies.set('sid', cookie);
    expect((await stale.get('/api/session')).status, 'the logged-out cookie').to.equal(401);

    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    for (const outcome of ['timeout', 'error']) {
      expect(sample(metrics, 'session_store_operations_total', { backend: 'cookie', operation: 'destroy', outcome }), `cookie destroys counted ${outcome}`).to.equal(0);
    }
    await withPostgres(db.url, async (pg) => {
      const rows = (await pg.query("SELECT count(*) AS n FROM revocations WHERE kind = 'session'")).rows[0]!.n;
      expect(Number(rows), 'revocation rows for one logout').to.equal(1);
    });
  });

  it('logs a user out when an admin asks, though their sessions cannot be listed within the deadline', async () => {
    const user = new Client(app.url);
    const { user: who } = await user.signup();
    // The list goes through the database backend's deadline (LAST_RESORT_TIMEOUT_MS, 100 ms here), which every answer misses.
    const res = await new Client(app.url).request('DELETE', `/api/admin/users/${who.id}/sessions`, undefined, { Authorization: `Bearer ${ADMIN_TOKEN}` });
    expectError(res, 503, 'service_unavailable');
    expect((res.json.error as { message: string }).message).to.match(/every session of this user is revoked/);
    expect((await user.get('/api/session')).status, 'the user’s session').to.equal(401);
  });
});
