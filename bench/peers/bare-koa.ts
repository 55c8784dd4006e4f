/**
 * The ceiling: Koa, @koa/router and @koa/bodyparser with no session at all. /read answers
 * the user JSON a session would hold, /write parses the body and echoes the preferences.
 */
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import Koa from 'koa';
import { HOST, listening, PORT, preferencesOf } from './common.js';

const user = { id: 1, email: 'bench-user-1@example.com', name: 'Bench User 1', role: 'user' };
const app = new Koa();
const router = new Router();
router.post('/login', (ctx) => {
  // No session: a plain cookie, so that every request carries one as with the other targets.
  ctx.cookies.set('bench', String((ctx.request.body as { id?: number } | undefined)?.id ?? 0), { httpOnly: true, sameSite: 'lax' });
  ctx.body = { csrfToken: '' };
});
router.get('/read', (ctx) => {
  ctx.body = { authenticated: true, user };
});
router.post('/write', (ctx) => {
  ctx.body = { preferences: preferencesOf(ctx.request.body) ?? {} };
});
router.get('/anon', (ctx) => {
  ctx.body = { status: 'ok' };
});
app.use(bodyParser());
app.use(router.routes());
app.listen(PORT, HOST, listening('bare-koa'));
