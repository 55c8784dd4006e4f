/**
 * SESSION_SECRETS rotation, as an operator does it, on every backend: the new secret goes first
 * (sessions sealed or signed with the old one go on), then the old one is taken out (they end:
 * 401), while sessions made since, under the new one, go on.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { backendEnv, expectError } from './helpers.js';

const secret = () => randomBytes(32).toString('base64url');

for (const backend of ['cookie', 'database', 'redis'] as const) {
  describe(`SESSION_SECRETS rotation, with SESSION_STORAGE=${backend}`, function () {
    this.timeout(60_000);
    let app: AppProcess;
    const [oldSecret, newSecret] = [secret(), secret()];
    before(async () => {
      app = await startApp(backendEnv(backend, { SESSION_SECRETS: oldSecret }));
    });
    after(() => app?.stop());

    it('keeps old sessions while the old secret verifies, and ends them once it is taken out', async () => {
      const before = new Client(app.url);
      await before.signup();
      const oldCookie = before.sessionCookie()!;

      await app.restart({ SESSION_SECRETS: `${newSecret},${oldSecret}` });
      expect((await before.get('/api/session')).status, 'the old secret still verifies').to.equal(200);
      const after = new Client(app.url);
      await after.signup();

      await app.restart({ SESSION_SECRETS: newSecret });
      const replay = new Client(app.url);
      replay.cookies.set('sid', oldCookie);
      expectError(await replay.get('/api/session'), 401, 'unauthenticated');
      expect((await replay.get('/', { Accept: 'text/html' })).status, 'the dashboard sends it to log in').to.equal(302);
      expect((await after.get('/api/session')).status, 'made under the new secret').to.equal(200);
    });
  });
}
