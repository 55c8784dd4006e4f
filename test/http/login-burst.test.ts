/**
 * A burst of logins must not starve everyone else. argon2 and sqlite3 share libuv's thread pool:
 * with every thread on a hash, session reads on SQLite waited past their deadline and answered
 * 503 (src/auth/passwords.ts keeps two threads free).
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { backendEnv, GOOD_PASSWORD } from './helpers.js';

describe('a burst of logins (SQLite)', function () {
  this.timeout(120_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp(backendEnv('database'));
  });
  after(() => app?.stop());

  it('leaves other users served: every login and every read of a logged-in user answers', async () => {
    const reader = new Client(app.url);
    await reader.signup();
    const { email } = await new Client(app.url).signup();
    for (let round = 0; round < 3; round++) {
      const logins = Promise.all(Array.from({ length: 16 }, () => new Client(app.url).login(email, GOOD_PASSWORD)));
      let done = false;
      const reads: number[] = [];
      const reading = (async () => {
        while (!done) reads.push((await reader.get('/api/session')).status);
      })();
      const statuses = (await logins).map((r) => r.status);
      done = true;
      await reading;
      expect(statuses, `logins, round ${round}`).to.deep.equal(statuses.map(() => 200));
      expect(reads.filter((s) => s !== 200), `reads during round ${round}`).to.deep.equal([]);
    }
  });
});
