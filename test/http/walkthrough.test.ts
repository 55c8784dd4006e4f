import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';

describe('the README walk-through, on the embedded default (database on SQLite)', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp();
  });
  after(() => app?.stop());

  it('signs up, sees who is logged in, lists sessions, and logs out for good', async () => {
    const browser = new Client(app.url);
    const { user } = await browser.signup({ name: 'Ann' });
    const me = await browser.get('/api/session');
    expect(me.status).to.equal(200);
    expect(me.json).to.include({ authenticated: true });
    expect((me.json.user as { id: number }).id).to.equal(user.id);
    expect((me.json.session as { backend: string }).backend).to.equal('database');

    const list = await browser.get('/api/sessions');
    expect((list.json.sessions as unknown[]).length).to.equal(1);

    const stolen = browser.sessionCookie();
    expect((await browser.post('/api/logout')).status).to.equal(204);
    expect((await browser.get('/api/session')).status).to.equal(401);

    const replay = new Client(app.url);
    replay.cookies.set('sid', stolen!);
    expect((await replay.get('/api/session')).status).to.equal(401);
  });
});
