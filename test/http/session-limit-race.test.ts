/**
 * SESSION_MAX_PER_USER under logins that race: each login lists the user's sessions, and a
 * listing taken before another login's session was stored cannot end it. A slow listing (a
 * busy database: here 300 ms added to the real one) widens that window far enough to be sure.
 * In process, so that the listing can be slowed; the stores are the real ones (SQLite).
 */
import { mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { expect } from 'chai';
import { createSwitchboard, type Switchboard } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { Client } from '../support/http-client.js';
import { GOOD_PASSWORD } from './helpers.js';

describe('SESSION_MAX_PER_USER=2 with logins racing a slow listing', function () {
  this.timeout(60_000);
  let switchboard: Switchboard;
  let server: Server;
  let url: string;
  before(async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'switchboard-limit-'));
    const config = loadConfig({ DATA_DIR: dataDir, DATABASE_URL: `sqlite:${path.join(dataDir, 'db.sqlite')}`, REDIS_URL: 'none', LOG_LEVEL: 'silent', NODE_ENV: 'test', SESSION_MAX_PER_USER: '2' });
    switchboard = await createSwitchboard(config);
    const { backends } = switchboard.deps;
    const listByUser = backends.listByUser.bind(backends);
    backends.listByUser = async (userId) => {
      const listed = await listByUser(userId);
      await delay(300);
      return listed;
    };
    server = switchboard.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await switchboard?.close();
  });

  it('leaves two sessions, not one per login, and the oldest ends', async () => {
    const first = new Client(url, 'first');
    const { email } = await first.signup();
    const racers = Array.from({ length: 4 }, (_, i) => new Client(url, `racer-${i}`));
    const answers = await Promise.all(racers.map((c) => c.login(email, GOOD_PASSWORD)));
    expect(answers.map((a) => a.status)).to.deep.equal([200, 200, 200, 200]);
    const alive: Client[] = [];
    for (const c of [first, ...racers]) if ((await c.get('/api/session')).status === 200) alive.push(c);
    expect(alive, 'sessions that still open').to.have.length(2);
    expect(await alive[0]!.get('/api/sessions').then((r) => (r.body as { sessions: unknown[] }).sessions)).to.have.length(2);
    expect((await first.get('/api/session')).status, 'the oldest went first').to.equal(401);
  });
});
