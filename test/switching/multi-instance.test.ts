/**
 * Two server processes behind one PostgreSQL and one Redis, as in production: a session made
 * on one is served by the other in every backend; an admin override or a revocation issued on
 * one is honoured by the other (at once for stored sessions; for the in-memory revocation list
 * that guards sealed cookies and for the override, at once while Redis carries the news, else
 * within SYNC_INTERVAL_MS).
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { BackendName } from '../../src/config/config.js';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const ADMIN_TOKEN = randomBytes(24).toString('hex');
const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BACKENDS: BackendName[] = ['database', 'redis', 'cookie'];

/** Polls (bounded: 200 × 50 ms) until `check` holds. */
async function eventually(what: string, check: () => Promise<boolean>) {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`never happened: ${what}`);
}

describe('two instances sharing PostgreSQL and Redis', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let a: AppProcess;
  let b: AppProcess;
  /** Another deployment: its own database, the same Redis server and key prefix. */
  let other: AppProcess;

  before(async () => {
    db = await createTestDatabase('switchboard_multi');
    const shared = {
      DATABASE_URL: db.url,
      REDIS_URL: 'redis://127.0.0.1:6379/0',
      REDIS_KEY_PREFIX: `multi-${randomBytes(4).toString('hex')}:`,
      SESSION_SECRETS: randomBytes(32).toString('base64url'),
      ADMIN_TOKEN,
      SYNC_INTERVAL_MS: '1000',
    };
    a = await startApp(shared);
    b = await startApp(shared);
    // Redis database 1: a pub/sub channel spans every database of the server, keys do not.
    const { REDIS_KEY_PREFIX, SESSION_SECRETS, SYNC_INTERVAL_MS } = shared;
    other = await startApp({ REDIS_URL: 'redis://127.0.0.1:6379/1', REDIS_KEY_PREFIX, SESSION_SECRETS, ADMIN_TOKEN, SYNC_INTERVAL_MS, SESSION_STORAGE: 'cookie' });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await other?.stop();
    await db?.drop();
  });

  const setOverride = async (on: AppProcess, backend: BackendName) => {
    expect((await new Client(on.url).put('/api/admin/flags/session-storage', { backend }, auth)).status).to.equal(200);
    await eventually(`override ${backend} reaches the other instance`, async () => {
      const other = on === a ? b : a;
      return (await new Client(other.url).get('/api/admin/flags', auth)).json.value === backend;
    });
  };

  /** A client logged in on `a`, whose cookie is then replayed against `b`. */
  const onBoth = async () => {
    const onA = new Client(a.url);
    const creds = await onA.signup();
    const onB = new Client(b.url);
    for (const [k, v] of onA.cookies) onB.cookies.set(k, v);
    onB.csrfToken = onA.csrfToken;
    return { onA, onB, creds };
  };

  for (const backend of BACKENDS) {
    describe(`with sessions in ${backend}`, () => {
      before(() => setOverride(a, backend));

      it('serves on one instance a session made on the other', async () => {
        const { onB } = await onBoth();
        const res = await onB.get('/api/session');
        expect(res.status).to.equal(200);
        expect((res.json.session as { backend: string }).backend).to.equal(backend);
      });

      it('refuses everywhere a session logged out on one instance', async () => {
        const { onA, onB } = await onBoth();
        expect((await onA.post('/api/logout')).status).to.equal(204);
        await eventually('the other instance refuses the logged-out cookie', async () => (await onB.get('/api/session')).status === 401);
      });

      it('ends the other sessions of a user who changes password on the other instance', async () => {
        const { onA, onB, creds } = await onBoth();
        const elsewhere = new Client(b.url);
        expect((await elsewhere.login(creds.email, creds.password)).status).to.equal(200);
        const res = await onA.post('/api/password', { currentPassword: creds.password, newPassword: 'another long passphrase 42' });
        expect(res.status).to.equal(204);
        expect((await onA.get('/api/session')).status).to.equal(200, 'the session that changed it goes on');
        await eventually('the other sessions are refused on the other instance', async () => (await elsewhere.get('/api/session')).status === 401 && (await onB.get('/api/session')).status === 401);
      });
    });
  }

  it('refuses a sealed cookie on the other instance as soon as the logout has answered (Redis carries the news)', async () => {
    await setOverride(a, 'cookie');
    for (let i = 0; i < 3; i++) {
      const { onA, onB } = await onBoth();
      expect((await onB.get('/api/session')).status).to.equal(200);
      expect((await onA.post('/api/logout')).status).to.equal(204);
      // No waiting: the poll (SYNC_INTERVAL_MS, 1 s here) would leave it working for up to a second.
      expect((await onB.get('/api/session')).status).to.equal(401);
    }
  });

  it('serves an override on the other instance as soon as the setting call has answered (Redis carries the news)', async () => {
    const flagOn = async (on: AppProcess) => (await new Client(on.url).get('/api/admin/flags', auth)).json;
    for (const backend of ['redis', 'cookie', 'database'] as const) {
      expect((await new Client(a.url).put('/api/admin/flags/session-storage', { backend }, auth)).status).to.equal(200);
      // No waiting: the poll (SYNC_INTERVAL_MS, 1 s here) would leave b on the old backend for up to a second.
      expect((await flagOn(b)).value).to.equal(backend);
      const onB = new Client(b.url);
      await onB.signup();
      expect(((await onB.get('/api/session')).json.session as { backend: string }).backend).to.equal(backend, 'a new session on b lands where the override says');
    }
    expect((await new Client(a.url).delete('/api/admin/flags/session-storage', auth)).status).to.equal(204);
    expect((await flagOn(b)).override).to.equal(null);
  });

  it('revoke-all on one instance ends sessions in every backend on both, and spares later ones', async () => {
    const victims: Client[] = [];
    for (const backend of BACKENDS) {
      await setOverride(a, backend);
      const { onB } = await onBoth();
      victims.push(onB);
    }
    await sleep(5); // every victim was issued strictly before the revocation
    const res = await new Client(b.url).post('/api/admin/sessions/revoke-all', {}, auth);
    expect(res.status).to.equal(200);
    expect(res.json.revokedBefore).to.be.a('string');
    await sleep(5);
    const survivor = new Client(a.url);
    await survivor.signup();
    for (const victim of victims) {
      await eventually('an old session is refused', async () => (await victim.get('/api/session')).status === 401);
      const onA = new Client(a.url);
      for (const [k, v] of victim.cookies) onA.cookies.set(k, v);
      await eventually('…on both instances', async () => (await onA.get('/api/session')).status === 401);
    }
    expect((await survivor.get('/api/session')).status).to.equal(200);
    const copy = new Client(b.url);
    for (const [k, v] of survivor.cookies) copy.cookies.set(k, v);
    expect((await copy.get('/api/session')).status).to.equal(200);
  });

  it('another deployment on the same Redis, with the same key prefix, hears none of it', async () => {
    // A sealed cookie there: only that instance's in-memory revocation list can refuse it.
    const bystander = new Client(other.url);
    await bystander.signup();
    await sleep(5);
    const { onB } = await onBoth();
    expect((await new Client(a.url).post('/api/admin/sessions/revoke-all', {}, auth)).status).to.equal(200);
    await setOverride(a, 'redis');
    // This deployment's other instance has heard both (the revocation may also come by its poll).
    await eventually('b refuses the revoked session', async () => (await onB.get('/api/session')).status === 401);
    await sleep(300); // what the channel carried reached every subscriber before b could answer
    expect((await bystander.get('/api/session')).status).to.equal(200, 'the other deployment kept its session');
    expect((await new Client(other.url).get('/api/admin/flags', auth)).json).to.deep.include({ value: 'cookie', override: null });
    expect((await new Client(a.url).delete('/api/admin/flags/session-storage', auth)).status).to.equal(204);
  });
});

/**
 * Instances that disagree about the flag for a while (a rolling restart with a new
 * SESSION_STORAGE, an automatic rollback on one of them) move a session back and forth, one
 * move per request. Each move is the user's activity too: it must push the idle expiry out, or
 * an active user behind a round-robin balancer is logged out at the idle timeout.
 */
describe('two instances that disagree about the flag', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  const apps: AppProcess[] = [];

  before(async () => {
    db = await createTestDatabase('switchboard_disagree');
    const shared = { DATABASE_URL: db.url, REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `disagree-${randomBytes(4).toString('hex')}:`, SESSION_SECRETS: randomBytes(32).toString('base64url'), SESSION_TOUCH_INTERVAL: '1' };
    for (const storage of ['cookie', 'database', 'redis']) apps.push(await startApp({ ...shared, SESSION_STORAGE: storage }));
  });
  after(async () => {
    for (const app of apps) await app.stop();
    await db?.drop();
  });

  for (const [from, to] of [
    [0, 1],
    [2, 1],
  ] as const) {
    it(`count every move as activity (${['cookie', 'database', 'redis'][from]} ⇄ database): the idle expiry moves on`, async () => {
      const user = new Client(apps[from]!.url);
      await user.signup();
      let expiresAt = Date.parse(((await user.get('/api/session')).json.session as { expiresAt: string }).expiresAt);
      for (const app of [apps[to]!, apps[from]!, apps[to]!]) {
        await sleep(1100); // past SESSION_TOUCH_INTERVAL
        const moving = new Client(app.url);
        for (const [k, v] of user.cookies) moving.cookies.set(k, v);
        const res = await moving.get('/api/session');
        expect(res.status, res.text).to.equal(200);
        for (const [k, v] of moving.cookies) user.cookies.set(k, v);
        const now = Date.parse((res.json.session as { expiresAt: string }).expiresAt);
        expect(now, `the move to ${(res.json.session as { backend: string }).backend} pushed the idle expiry out`).to.be.greaterThan(expiresAt);
        expiresAt = now;
      }
    });
  }

  /** One request of a tab: sent with `cookieValue` (what the browser held when the tab sent it) through `app`. */
  async function tabRequest(app: AppProcess, cookieValue: string, csrfToken: string, method: 'GET' | 'PATCH', body?: unknown) {
    const tab = new Client(app.url);
    tab.cookies.set('sid', cookieValue);
    tab.csrfToken = csrfToken;
    const res = await tab.request(method, '/api/session', body);
    expect(res.status, res.text).to.equal(200);
    const setCookie = res.headers.getSetCookie().find((line) => line.startsWith('sid='));
    return { res, setCookie: setCookie?.slice(4).split(';')[0], cookie: tab.sessionCookie()! };
  }

  it('a change sent with the database cookie after the session moved into a sealed cookie is written back to the database, and the browser told so', async () => {
    const [cookieApp, databaseApp] = apps as [AppProcess, AppProcess];
    const user = new Client(databaseApp.url);
    await user.signup();
    const inDatabase = user.sessionCookie()!;
    expect(inDatabase.startsWith('d.')).to.equal(true);
    // Tab 1 through the cookie instance: the session moves into a sealed cookie, which the browser now holds.
    const sealed = (await tabRequest(cookieApp, inDatabase, user.csrfToken!, 'PATCH', { preferences: { fromTab1: 1 } })).cookie;
    expect(sealed.startsWith('c.')).to.equal(true);
    // A read with the database cookie, a touch due, changes nothing: the browser's sealed cookie stays.
    await sleep(1100); // past SESSION_TOUCH_INTERVAL
    const read = await tabRequest(databaseApp, inDatabase, user.csrfToken!, 'GET');
    expect(read.setCookie, 'a read does not switch the browser back to the database cookie').to.equal(undefined);
    // Tab 2's request had left with the database cookie, through the database instance.
    const stale = await tabRequest(databaseApp, inDatabase, user.csrfToken!, 'PATCH', { preferences: { fromTab2: 2 } });
    expect(stale.res.json.preferences).to.deep.equal({ fromTab1: 1, fromTab2: 2 });
    expect(stale.setCookie, 'the browser, holding the sealed cookie, is given the database one again').to.equal(inDatabase);
    const after = await tabRequest(databaseApp, stale.cookie, user.csrfToken!, 'GET');
    expect(after.res.json.preferences).to.deep.equal({ fromTab1: 1, fromTab2: 2 });
  });
});
