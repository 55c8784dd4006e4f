/** The four routes as every koa-session peer serves them (`ctx.session` from koa-session or the hand-rolled reference). */
import Router from '@koa/router';
import type { Context } from 'koa';
import { preferencesOf, sessionContent, type SessionContent } from './common.js';

type SessionCtx = Context & { session: (Partial<SessionContent> & Record<string, unknown>) | null };
const sessionOf = (ctx: unknown) => (ctx as SessionCtx).session;

export function sessionRoutes() {
  const router = new Router();
  router.post('/login', (ctx) => {
    const content = sessionContent(ctx.request.body);
    if (!content) {
      ctx.status = 400;
      return;
    }
    Object.assign(sessionOf(ctx)!, content);
    ctx.body = { csrfToken: content.csrfToken };
  });
  router.get('/read', (ctx) => {
    const s = sessionOf(ctx);
    if (!s?.user) {
      ctx.status = 401;
      ctx.body = { authenticated: false };
      return;
    }
    ctx.body = { authenticated: true, user: s.user };
  });
  router.post('/write', (ctx) => {
    const s = sessionOf(ctx);
    const preferences = preferencesOf(ctx.request.body);
    if (!s?.user || !preferences) {
      ctx.status = s?.user ? 400 : 401;
      return;
    }
    s.preferences = { ...(s.preferences ?? {}), ...preferences };
    ctx.body = { preferences: s.preferences };
  });
  router.get('/anon', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  return router;
}
