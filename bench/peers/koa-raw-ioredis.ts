/**
 * Reference, not a peer: the Redis session round trip with no session library at all —
 * an unsigned random id in a cookie, GET + JSON.parse to read, SET … PX to write (ioredis
 * defaults). The distance from this to koa-session + ioredis is koa-session's own cost.
 */
import { bodyParser } from '@koa/bodyparser';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import Koa, { type Context, type Next } from 'koa';
import { HOST, KEY_PREFIX, listening, MAX_AGE_MS, PORT, REDIS_URL } from './common.js';
import { sessionRoutes } from './koa-routes.js';

const redis = new Redis(REDIS_URL);
const COOKIE = 'sid';

async function rawSession(ctx: Context, next: Next) {
  const c = ctx as Context & { session: Record<string, unknown> | null };
  let id = ctx.cookies.get(COOKIE, { signed: false });
  const stored = id ? await redis.get(KEY_PREFIX + id) : null;
  const before = stored ?? '{}';
  c.session = JSON.parse(before) as Record<string, unknown>;
  await next();
  const after = JSON.stringify(c.session);
  if (after === before) return;
  if (!stored || !id) {
    id = randomUUID();
    ctx.cookies.set(COOKIE, id, { httpOnly: true, sameSite: 'lax', maxAge: MAX_AGE_MS, signed: false });
  }
  await redis.set(KEY_PREFIX + id, after, 'PX', MAX_AGE_MS);
}

const app = new Koa();
app.use(bodyParser());
app.use(rawSession);
const router = sessionRoutes();
app.use(router.routes());
app.listen(PORT, HOST, listening('koa-raw-ioredis'));
