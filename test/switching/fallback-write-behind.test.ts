/**
 * A change acknowledged while its database copy is still waiting to be written behind
 * (MIRROR_FLUSH_MS), then Redis fails: the request served from the copy must see the change
 * (this instance holds it), and a change made then must not drop it. MIRROR_FLUSH_MS is widened
 * so that the window, 100 ms by default, is certain to be open when Redis fails.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { startRedis, type RedisProcess } from '../support/redis-server.js';

describe('falling back while a change waits to be written behind', function () {
  this.timeout(60_000);
  let redis: RedisProcess;
  let app: AppProcess;

  before(async () => {
    redis = await startRedis();
    app = await startApp({
      SESSION_STORAGE: 'redis',
      SESSION_FALLBACK: 'database',
      REDIS_URL: redis.url,
      MIRROR_FLUSH_MS: '5000',
      BREAKER_HALF_OPEN_AFTER_MS: '300',
    });
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });

  it('serves the acknowledged change from the copy, and keeps it through a change made meanwhile', async () => {
    const client = new Client(app.url, 'write-behind');
    await client.signup();
    expect((await client.patch('/api/session', { preferences: { n: 1 } })).status).to.equal(200);
    await redis.kill();
    const during = await client.get('/api/session');
    expect(during.status).to.equal(200);
    expect((during.json.session as { backend: string }).backend).to.equal('database');
    expect(during.json.preferences, 'read from the copy right after Redis failed').to.deep.equal({ n: 1 });
    expect((await client.patch('/api/session', { preferences: { m: 1 } })).status).to.equal(200);
    await redis.restart();
    // Past MIRROR_FLUSH_MS: a copy still held back then (before the fix, {n: 1}) has landed.
    await new Promise((r) => setTimeout(r, 6000));
    const after = await client.get('/api/session');
    expect(after.status).to.equal(200);
    expect(after.json.preferences, 'after Redis is back and every copy is written').to.deep.equal({ n: 1, m: 1 });
  });
});
