/**
 * A tab whose cookie still names the database (a slower response set it after another tab's
 * request moved the session into a sealed cookie) saves while the flag says database. The session
 * is in the cookie: the save moves it out (CookieStore.evict marks the seal moved, and carries over
 * what was sealed since), rather than continue the session in the database while the seal stays
 * live — two copies, each taking changes, the browser keeping one of them.
 * (Traced by a reviewer with readers and a writer sharing one cookie jar while the flag flipped
 * between database and cookie.)
 */
import path from 'node:path';
import { expect } from 'chai';
import type { BackendName } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/config.js';
import { makeScratchDir } from '../support/child-process.js';
import { Client } from '../support/http-client.js';
import { sendWithCookie as send, serveInProcess, type InProcessApp } from '../support/in-process-app.js';

describe('a save through a cookie naming the database, for a session held by a sealed cookie', function () {
  this.timeout(60_000);
  let app: InProcessApp;
  let url: string;

  before(async () => {
    const dataDir = makeScratchDir('switchboard-stale-database-cookie-');
    // Database copies written behind late: the cookie's newer seals are not in the directory entry yet.
    app = await serveInProcess(loadConfig({ DATA_DIR: dataDir, DATABASE_URL: `sqlite:${path.join(dataDir, 'db.sqlite')}`, REDIS_URL: 'none', LOG_LEVEL: 'silent', NODE_ENV: 'test', SESSION_STORAGE: 'database', MIRROR_FLUSH_MS: '10000' }));
    url = app.url;
  });
  after(() => app?.close());

  const flag = (backend: BackendName) => app.switchboard.deps.flag.override.set(backend, 'admin');

  /** A session in the database with `preferences`; then moved into a sealed cookie by a GET: both cookies. */
  async function movedIntoCookie(preferences: Record<string, unknown>) {
    await flag('database');
    const client = new Client(url);
    await client.signup();
    const database = client.cookies.get('sid')!;
    await send(client, database, 'PATCH', { preferences });
    await flag('cookie');
    const { sid: cookie } = await send(client, database, 'GET');
    expect(cookie, 'the session moved into a sealed cookie').to.match(/^c\./);
    return { client, database, cookie };
  }

  it('keeps both changes when the browser then keeps the sealed cookie and saves through it', async () => {
    const { client, database, cookie } = await movedIntoCookie({ counter: 3, theme: 'dark' });
    // The flag says database. The tab holding the database's cookie saves counter 4.
    await flag('database');
    await send(client, database, 'PATCH', { preferences: { counter: 4 } });
    // The flag says cookie again; the jar kept the sealed cookie, and the next change goes through it.
    await flag('cookie');
    const { sid } = await send(client, cookie, 'PATCH', { preferences: { theme: 'light' } });
    await flag('database');
    const { reply } = await send(client, sid, 'GET');
    expect(reply.json.preferences, 'counter 4 was answered 200 before the theme changed').to.deep.equal({ counter: 4, theme: 'light' });
  });

  it('carries over a change sealed since the database copy was written', async () => {
    const { client, database, cookie } = await movedIntoCookie({ counter: 3, theme: 'dark' });
    // Through the sealed cookie, the theme changes; its database copy waits (MIRROR_FLUSH_MS).
    await send(client, cookie, 'PATCH', { preferences: { theme: 'light' } });
    // The tab holding the database's cookie reads the entry as it was, and saves counter 4.
    await flag('database');
    const { sid } = await send(client, database, 'PATCH', { preferences: { counter: 4 } });
    const { reply } = await send(client, sid, 'GET');
    expect(reply.json.preferences, 'the theme was answered 200 before the counter changed').to.deep.equal({ counter: 4, theme: 'light' });
  });
});
