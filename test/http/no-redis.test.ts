import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { sample } from '../switching/metrics-text.js';

describe('a server with the redis backend switched off (REDIS_URL=none)', function () {
  this.timeout(60_000);
  let app: AppProcess;
  const ADMIN_TOKEN = 'a-long-enough-admin-token';
  before(async () => {
    app = await startApp({ REDIS_URL: 'none', ADMIN_TOKEN });
  });
  after(() => app?.stop());

  it('reports redis as disabled, not down, and exports no up series for it', async () => {
    const ready = await new Client(app.url).get('/readyz');
    expect(ready.status).to.equal(200);
    expect(ready.json.backends).to.deep.equal({ cookie: 'up', database: 'up', redis: 'disabled' });
    const metrics = (await new Client(app.url).get('/metrics')).text;
    expect(metrics).to.not.match(/^session_store_up\{backend="redis"\}/m);
    expect(sample(metrics, 'session_store_up', { backend: 'database' })).to.equal(1);
  });

  it('refuses an override to the switched-off backend', async () => {
    const res = await new Client(app.url).put('/api/admin/flags/session-storage', { backend: 'redis' }, { Authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(res.status).to.equal(400);
    expect((res.json.error as { code: string }).code).to.equal('invalid_input');
  });

  it('still serves sessions in the other backends', async () => {
    const c = new Client(app.url);
    await c.signup();
    expect((await c.get('/api/session')).status).to.equal(200);
  });
});
