/**
 * koa-session with an external store written the plain way: ioredis with its default
 * options, JSON values, `SET … PX maxAge`. The cookie holds the signed external key.
 */
import { bodyParser } from '@koa/bodyparser';
import { Redis } from 'ioredis';
import Koa from 'koa';
import session from 'koa-session';
import { HOST, KEY_PREFIX, listening, MAX_AGE_MS, PORT, REDIS_URL, SECRET } from './common.js';
import { sessionRoutes } from './koa-routes.js';

const redis = new Redis(REDIS_URL);
const store = {
  async get(key: string) {
    const value = await redis.get(KEY_PREFIX + key);
    return value ? (JSON.parse(value) as unknown) : undefined;
  },
  async set(key: string, sess: unknown, maxAge: number | 'session' | undefined) {
    await redis.set(KEY_PREFIX + key, JSON.stringify(sess), 'PX', typeof maxAge === 'number' ? maxAge : MAX_AGE_MS);
  },
  async destroy(key: string) {
    await redis.del(KEY_PREFIX + key);
  },
};

const app = new Koa();
app.keys = [SECRET];
app.use(bodyParser());
app.use(session({ maxAge: MAX_AGE_MS, httpOnly: true, sameSite: 'lax', store }, app));
const router = sessionRoutes();
app.use(router.routes());
app.listen(PORT, HOST, listening('koa-session-ioredis'));
