import { expect } from 'chai';
import { Redis } from 'ioredis';
import Koa from 'koa';
import session from 'koa-session';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { toKoaSessionStore } from '../../src/sessions/koa-session-adapter.js';
import { RedisStore } from '../../src/sessions/redis-store.js';
import { Client } from '../support/http-client.js';

describe('our stores as koa-session external stores', () => {
  const redis = new Redis('redis://127.0.0.1:6379/0');
  const prefix = `koa-session-${randomBytes(4).toString('hex')}:`;
  let server: ReturnType<Koa['listen']>;
  let url: string;

  before(async () => {
    const app = new Koa();
    app.keys = [randomBytes(16).toString('hex')];
    app.use(session({ store: toKoaSessionStore(new RedisStore(redis, { keyPrefix: prefix, absoluteTimeoutMs: 86_400_000 })) }, app));
    app.use((ctx) => {
      if (ctx.path === '/logout') ctx.session = null;
      else if (ctx.session) ctx.session.views = ((ctx.session.views as number) ?? 0) + 1;
      ctx.body = { views: ctx.session?.views ?? 0 };
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.close();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });

  it('keeps a koa-session session in Redis across requests, and ends it', async () => {
    const c = new Client(url);
    expect((await c.get('/')).json.views).to.equal(1);
    expect((await c.get('/')).json.views).to.equal(2);
    expect((await redis.keys(`${prefix}s:*`)).length).to.equal(1);
    await c.get('/logout');
    expect((await redis.keys(`${prefix}s:*`)).length).to.equal(0);
  });
});
