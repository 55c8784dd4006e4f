/**
 * Two instances whose clocks are two hours apart (the second one's runs ahead, as on a host whose
 * NTP has failed). A revoke-all issued on the fast one ends what was issued before it, on both;
 * what the other issues afterwards keeps working, on both — dated by the fast clock, the
 * revocation refused every login for two hours: a login answered 200, and the next request 401.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitUntil } from '../support/redis-server.js';
import { ADMIN_TOKEN, redisEnv } from '../http/helpers.js';

const TWO_HOURS = 2 * 3_600_000;
const CLOCK_AHEAD = path.resolve(import.meta.dirname, '..', 'support', 'clock-ahead.mjs');

describe('two instances whose clocks are two hours apart', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let right: AppProcess;
  let fast: AppProcess;

  before(async () => {
    db = await createTestDatabase('clocks');
    // Idle sessions live longer than the gap: two hours apart, the default (2 h) makes every
    // session the other instance serves look idle too long.
    const env = { SESSION_STORAGE: 'database', ...redisEnv(), DATABASE_URL: db.url, ADMIN_TOKEN, SESSION_SECRETS: randomBytes(32).toString('base64url'), SESSION_IDLE_TIMEOUT: '14400' };
    right = await startApp(env);
    fast = await startApp({ ...env, NODE_OPTIONS: `--import ${CLOCK_AHEAD}`, CLOCK_AHEAD_MS: String(TWO_HOURS) });
  });
  after(async () => {
    await right?.stop();
    await fast?.stop();
    await db?.drop();
  });

  it('a revoke-all on the fast one ends what came before it on both, and logins made after it on the other keep working', async () => {
    const before = new Client(right.url);
    await before.signup();
    const revoked = await new Client(fast.url).post('/api/admin/sessions/revoke-all', undefined, { Authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(revoked.status, revoked.text).to.equal(200);
    await waitUntil('the revoke-all heard by the other instance', async () => (await before.get('/api/session')).status === 401, 200);

    const after = new Client(right.url);
    await after.signup();
    const res = await after.get('/api/session');
    expect(res.status, 'the next request after a login made after the revoke-all').to.equal(200);
    // Dated by the database's clock, the revoke-all does not refuse it on the fast instance either.
    const sameCookieOnFast = new Client(fast.url);
    sameCookieOnFast.cookies.set('sid', after.sessionCookie()!);
    expect((await sameCookieOnFast.get('/api/session')).status, 'that session, on the fast instance').to.equal(200);
    expect(fast.output(), 'said in the fast one’s log').to.match(/clock_disagreement.*aheadSeconds":7[12]\d\d/);
  });
});
