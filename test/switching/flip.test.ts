/**
 * An operator flips the session-storage flag through every direction while browser-like
 * clients keep working: nobody is logged out and no session data is lost.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { BackendName } from '../../src/config/config.js';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { sample } from './metrics-text.js';

const ADMIN_TOKEN = randomBytes(24).toString('hex');

interface Expected {
  client: Client;
  userId: number;
  csrfToken: string;
  platformId: number;
  counter: number;
}

describe('flipping the session-storage flag under concurrent traffic', function () {
  this.timeout(120_000);
  let app: AppProcess;
  const admin = () => new Client(app.url);
  const flip = async (backend: BackendName) => {
    const res = await admin().put('/api/admin/flags/session-storage', { backend }, { Authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(res.status).to.equal(200);
  };

  before(async () => {
    app = await startApp({
      ADMIN_TOKEN,
      SESSION_STORAGE: 'database',
      REDIS_URL: 'redis://127.0.0.1:6379/0',
      REDIS_KEY_PREFIX: `flip-${randomBytes(4).toString('hex')}:`,
      SESSION_TOUCH_INTERVAL: '0',
    });
  });
  after(() => app?.stop());

  it('logs nobody out and keeps user, platform, CSRF token and app data through every direction', async () => {
    const users: Expected[] = [];
    for (let i = 0; i < 10; i++) {
      const client = new Client(app.url, `flip-client-${i}`);
      const { user } = await client.signup();
      const platform = await client.post('/api/platforms', { name: `P${i}`, type: 'web' });
      const platformId = (platform.json.platform as { id: number }).id;
      expect((await client.post(`/api/platforms/${platformId}/activate`)).status).to.equal(200);
      users.push({ client, userId: user.id, csrfToken: client.csrfToken!, platformId, counter: 0 });
    }

    // database → redis → cookie → database → cookie → redis → database: all six directions.
    const steps: BackendName[] = ['redis', 'cookie', 'database', 'cookie', 'redis', 'database'];
    const failures: string[] = [];
    let requests = 0;
    let step = 0;
    const flipper = (async () => {
      let mark = 0;
      for (const backend of steps) {
        // Flip once the clients have made another 60 requests since the last flip (so every
        // session meets every state); bounded by the traffic below.
        for (let spins = 0; spins < 2000 && requests < mark + 60; spins++) await new Promise((r) => setTimeout(r, 5));
        await flip(backend);
        mark = requests;
        step++;
      }
    })();

    await Promise.all(
      users.map(async (u) => {
        for (let i = 0; i < 70; i++) {
          if (i % 3 === 0) {
            u.counter++;
            const res = await u.client.patch('/api/session', { preferences: { counter: u.counter } });
            requests++;
            if (res.status !== 200) failures.push(`PATCH ${res.status} ${res.text}`);
            continue;
          }
          const res = await u.client.get('/api/session');
          requests++;
          if (res.status !== 200) {
            failures.push(`GET ${res.status} ${res.text}`);
            continue;
          }
          const body = res.json as { user: { id: number }; csrfToken: string; platform: { id: number } | null; preferences: { counter?: number } };
          if (body.user.id !== u.userId) failures.push('user changed');
          if (body.csrfToken !== u.csrfToken) failures.push('csrf token changed');
          if (body.platform?.id !== u.platformId) failures.push('platform context lost');
          if (body.preferences.counter !== u.counter) failures.push(`counter ${body.preferences.counter} != ${u.counter}`);
        }
      }),
    );
    await flipper;
    expect([...new Set(failures)].slice(0, 10)).to.deep.equal([]);
    expect(step).to.equal(steps.length);

    // After the last flip every session ends up where the flag says.
    for (const u of users) {
      const res = await u.client.get('/api/session');
      expect(res.status).to.equal(200);
      expect((res.json.session as { backend: string }).backend).to.equal('database');
    }
    const metrics = (await admin().get('/metrics')).text;
    for (const [from, to] of [['database', 'redis'], ['redis', 'cookie'], ['cookie', 'database'], ['database', 'cookie'], ['cookie', 'redis'], ['redis', 'database']]) {
      expect(sample(metrics, 'session_migrations_total', { from: from!, to: to! }), `${from} → ${to}`).to.be.greaterThan(0);
    }
  });

  it('a session logged out stays logged out across later flips', async () => {
    const client = new Client(app.url);
    await client.signup();
    await flip('cookie');
    await client.get('/api/session');
    const sealed = client.sessionCookie();
    expect(sealed?.startsWith('c.')).to.equal(true);
    expect((await client.post('/api/logout')).status).to.equal(204);
    for (const backend of ['redis', 'database', 'cookie'] as const) {
      await flip(backend);
      const replay = new Client(app.url);
      replay.cookies.set('sid', sealed!);
      expect((await replay.get('/api/session')).status, `replayed after flip to ${backend}`).to.equal(401);
    }
  });

  it('the first page after a flip shows the backend the session moves to on that request', async () => {
    const client = new Client(app.url);
    await client.signup();
    await flip('database');
    await client.get('/api/session');
    const badge = (page: string) => /data-bind="backend">(\w+)</.exec(page)?.[1];
    const currentRow = (page: string) => /class="session session-current"[\s\S]*?data-backend="(\w+)"/.exec(page)?.[1];
    for (const [backend, label] of [['cookie', 'Cookie'], ['redis', 'Redis'], ['database', 'Database']] as const) {
      await flip(backend);
      const dashboard = await client.get('/', { Accept: 'text/html' });
      expect(client.sessionCookie()?.[0], `moved to ${backend} by this request`).to.equal(backend[0]);
      expect(badge(dashboard.text), `dashboard after the flip to ${backend}`).to.equal(label);
    }
    await flip('cookie');
    const sessions = await client.get('/sessions', { Accept: 'text/html' });
    expect(client.sessionCookie()?.[0]).to.equal('c');
    expect(currentRow(sessions.text), 'this device on the sessions page').to.equal('cookie');
    await flip('database');
  });
});
