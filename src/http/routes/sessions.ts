/** A user's own sessions: list, revoke one, revoke all others. */
import Router, { type RouterContext } from '@koa/router';
import type { AppDeps } from '../deps.js';
import { NotFoundError } from '../errors.js';
import { describeSession, type SessionRecord } from '../../sessions/session.js';
import { sessionListEntry } from '../users.js';
import { clientInfo } from '../client-info.js';
import { requireSession } from './auth.js';

export function sessionRoutes(deps: AppDeps) {
  const { backends, metrics, audit } = deps;
  const router = new Router();

  router.get('/api/sessions', async (ctx) => {
    const session = requireSession(ctx);
    const sessions = await backends.listByUser(session.data.user.id);
    ctx.set('Cache-Control', 'no-store');
    // The current session as this request has it, like GET /api/session: its database row (the
    // directory of every backend's sessions) takes a cookie or Redis session's activity later.
    const own = describeSession(session.record);
    const entry = (r: SessionRecord) => sessionListEntry(r, session.handle);
    ctx.body = {
      sessions: sessions.map((r) => (r.handle === session.handle ? ctx.state.sessions.withBackend({ ...entry(r), lastActivity: own.lastActivity, expiresAt: own.expiresAt }) : entry(r))),
    };
  });

  const revokeOne = async (ctx: RouterContext) => {
    const session = requireSession(ctx);
    if (ctx.params.handle === session.handle) {
      ctx.state.sessions.end('user');
      ctx.status = 204;
      return;
    }
    const target = (await backends.listByUser(session.data.user.id)).find((r) => r.handle === ctx.params.handle);
    if (!target) throw new NotFoundError('No such session');
    await backends.end(target);
    metrics.revocations.inc({ reason: 'user' });
    audit.record(clientInfo(ctx), { type: 'revoked', record: target, reason: 'user' });
    ctx.status = 204;
  };
  router.delete('/api/sessions/:handle', revokeOne);
  // The same, for the sessions page's forms without JavaScript: an HTML form cannot send DELETE.
  router.post('/api/sessions/:handle/revoke', revokeOne);

  router.post('/api/sessions/revoke-others', async (ctx) => {
    const session = requireSession(ctx);
    const ended = await backends.endUserSessions(session.data.user.id, session.handle);
    metrics.revocations.inc({ reason: 'others' }, ended.length);
    audit.record(clientInfo(ctx), { type: 'revoked', userId: session.data.user.id, reason: 'others', count: ended.length });
    ctx.body = { revoked: ended.length };
  });

  return router;
}
