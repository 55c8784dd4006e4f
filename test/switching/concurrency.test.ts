/**
 * Two requests of the same session at the same time, changing different things — a platform
 * switch and a preference — both survive (optimistic versioning with a field-level merge). For
 * the sealed cookie, on one instance: the store remembers its latest seals (cookie-store.ts).
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';

for (const backend of ['database', 'redis', 'cookie'] as const) {
  describe(`concurrent writes to one session (${backend})`, function () {
    this.timeout(60_000);
    let app: AppProcess;
    before(async () => {
      app = await startApp({ SESSION_STORAGE: backend, REDIS_KEY_PREFIX: `conc-${randomBytes(4).toString('hex')}:` });
    });
    after(() => app?.stop());

    it('keeps both a platform switch and a preference change made at the same moment', async () => {
      const c = new Client(app.url);
      await c.signup();
      const ids: number[] = [];
      for (const name of ['one', 'two']) ids.push(((await c.post('/api/platforms', { name, type: 'web' })).json.platform as { id: number }).id);
      const lost: string[] = [];
      for (let i = 1; i <= 20; i++) {
        const platformId = ids[i % 2]!;
        const [a, b] = await Promise.all([c.post(`/api/platforms/${platformId}/activate`), c.patch('/api/session', { preferences: { counter: i } })]);
        expect([a.status, b.status]).to.deep.equal([200, 200]);
        const now = (await c.get('/api/session')).json as { platform: { id: number }; preferences: { counter: number } };
        if (now.platform.id !== platformId) lost.push(`round ${i}: platform switch lost`);
        if (now.preferences.counter !== i) lost.push(`round ${i}: preference lost`);
      }
      expect(lost).to.deep.equal([]);
    });

    it('keeps two preferences set by two tabs at the same moment (the patch merges, not the whole object)', async () => {
      const c = new Client(app.url);
      await c.signup();
      const lost: string[] = [];
      for (let i = 1; i <= 20; i++) {
        const [a, b] = await Promise.all([c.patch('/api/session', { preferences: { theme: `t${i}` } }), c.patch('/api/session', { preferences: { counter: i } })]);
        expect([a.status, b.status]).to.deep.equal([200, 200]);
        const { preferences } = (await c.get('/api/session')).json as { preferences: { theme: string; counter: number } };
        if (preferences.theme !== `t${i}`) lost.push(`round ${i}: theme lost`);
        if (preferences.counter !== i) lost.push(`round ${i}: counter lost`);
      }
      expect(lost).to.deep.equal([]);
    });

    if (backend === 'cookie') {
      it('serves a cookie older than the latest (responses that came out of order) as the latest, and gives the browser the latest again', async () => {
        const c = new Client(app.url);
        await c.signup();
        const older = c.sessionCookie()!;
        expect((await c.patch('/api/session', { preferences: { counter: 1 } })).status).to.equal(200);
        const newer = c.sessionCookie()!;
        expect(newer).to.not.equal(older);
        c.cookies.set('sid', older); // the browser kept the earlier response's cookie
        const { preferences } = (await c.get('/api/session')).json as { preferences: { counter: number } };
        expect(preferences.counter).to.equal(1);
        // The latest sealed again: neither the older cookie nor nothing (which would leave it).
        expect(c.sessionCookie()).to.not.equal(older);
        expect(c.sessionCookie()).to.not.equal(newer);
      });
    }
  });
}

describe('concurrent writes to one session while a flag flip moves it', function () {
  this.timeout(120_000);
  const ADMIN_TOKEN = randomBytes(24).toString('hex');
  let app: AppProcess;
  before(async () => {
    app = await startApp({ SESSION_STORAGE: 'database', ADMIN_TOKEN, REDIS_KEY_PREFIX: `conc-flip-${randomBytes(4).toString('hex')}:` });
  });
  after(() => app?.stop());

  it('keeps both changes when both requests find the session in the backend the flag just left', async () => {
    const admin = new Client(app.url);
    const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
    const c = new Client(app.url);
    await c.signup();
    const ids: number[] = [];
    for (const name of ['one', 'two']) ids.push(((await c.post('/api/platforms', { name, type: 'web' })).json.platform as { id: number }).id);
    const lost: string[] = [];
    for (let i = 1; i <= 12; i++) {
      const backend = i % 2 ? 'redis' : 'database';
      expect((await admin.put('/api/admin/flags/session-storage', { backend }, auth)).status).to.equal(200);
      const platformId = ids[i % 2]!;
      // Both requests read the session where it was, and both move it.
      const [a, b] = await Promise.all([c.post(`/api/platforms/${platformId}/activate`), c.patch('/api/session', { preferences: { counter: i } })]);
      expect([a.status, b.status]).to.deep.equal([200, 200]);
      const now = (await c.get('/api/session')).json as { platform: { id: number }; preferences: { counter: number }; session: { backend: string } };
      expect(now.session.backend).to.equal(backend);
      if (now.platform.id !== platformId) lost.push(`round ${i}: platform switch lost`);
      if (now.preferences.counter !== i) lost.push(`round ${i}: preference lost`);
    }
    expect(lost).to.deep.equal([]);
  });
});
