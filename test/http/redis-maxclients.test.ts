/**
 * A Redis at `maxclients`: it answers a new connection "ERR max number of clients reached" and
 * closes it. The log names that once per connection refused (not `write EPIPE`, "Stream isn't
 * writeable", or nothing at all for the instance channel's connection).
 */
import { expect } from 'chai';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { freePort } from '../support/ports.js';
import { startRedis, type RedisProcess } from '../support/redis-server.js';

describe('a Redis with every connection it allows taken (maxclients)', function () {
  this.timeout(60_000);
  let redis: RedisProcess;
  let app: AppProcess | undefined;
  let held: Socket[] = [];
  before(async () => {
    redis = await startRedis({ port: await freePort(), extraArgs: () => ['--maxclients', '2'] });
  });
  afterEach(async () => {
    await app?.stop();
    for (const socket of held) socket.destroy();
    held = [];
    await sleep(200);
  });
  after(() => redis?.stop());

  /** `n` connections taken by someone else (another service sharing this Redis). */
  async function take(n: number) {
    for (let i = 0; i < n; i++) {
      const socket = connect({ host: '127.0.0.1', port: redis.port });
      await new Promise((resolve) => socket.once('connect', resolve));
      held.push(socket);
    }
    await sleep(100);
  }
  const refusals = () => (app?.output() ?? '').split('\n').filter((l) => l.includes('"redis_maxclients"'));

  it('names it once for the instance channel, whose connection alone is refused (silent before)', async () => {
    await take(1);
    app = await startApp({ PORT: String(await freePort()), SESSION_STORAGE: 'redis', REDIS_URL: redis.url });
    await new Client(app.url).signup();
    await sleep(4000); // several reconnects
    expect(refusals().map((l) => (JSON.parse(l) as { connection: string }).connection)).to.deep.equal(['instance channel (subscriber)']);
    expect(refusals()[0]).to.include('raise maxclients');
  });

  it('names it once for the main connection too when that one is refused, however often it reconnects', async () => {
    await take(2);
    app = await startApp({ PORT: String(await freePort()), SESSION_STORAGE: 'redis', REDIS_URL: redis.url });
    for (let i = 0; i < 20; i++) await new Client(app.url).get('/api/session');
    await sleep(4000);
    expect(refusals().map((l) => (JSON.parse(l) as { connection: string }).connection).sort()).to.deep.equal(['instance channel (subscriber)', 'main']);
  });
});
