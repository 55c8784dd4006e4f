/**
 * Operator routes, behind `Authorization: Bearer $ADMIN_TOKEN` (404 when ADMIN_TOKEN is unset):
 * the session-storage flag override, and incident controls over users and sessions.
 */
import Router from '@koa/router';
import { timingSafeEqual, createHash } from 'node:crypto';
import type { Context, Next } from 'koa';
import { z } from 'zod';
import { BACKENDS } from '../../config/config.js';
import { FLAG_NAME } from '../../flags/override.js';
import { clientInfo } from '../client-info.js';
import type { AppDeps } from '../deps.js';
import { isDisabled } from '../../sessions/disabled-store.js';
import { BackendUnavailableError } from '../../sessions/errors.js';
import { isDatabaseOutageError } from '../../db/database.js';
import { AdminAuthError, FeatureDisabledError, InvalidInputError, NotFoundError, ServiceUnavailableError } from '../errors.js';
import { publicUser, sessionListEntry } from '../users.js';
import { idParam, parseBody } from '../validation.js';

const overrideInput = z.object({ backend: z.enum(BACKENDS, { error: `backend must be one of ${BACKENDS.join(', ')}` }) }).strict();
export const ROLES = ['user', 'admin'] as const;
const userPatchInput = z
  .object({
    active: z.boolean({ error: 'active must be true or false' }).optional(),
    role: z.enum(ROLES, { error: `role must be one of ${ROLES.join(', ')}` }).optional(),
  })
  .strict()
  .refine((p) => p.active !== undefined || p.role !== undefined, 'Send active, role or both');

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Whether `path` is under /api/admin as the router would match it: the router ignores letter
 * case and decodes percent-escapes, so `/API/Admin/flags` and `/api/%61dmin/flags` reach admin
 * routes too.
 */
export function isAdminPath(path: string): boolean {
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // A malformed escape: the router matches nothing with it either.
  }
  const p = decoded.toLowerCase();
  return p === '/api/admin' || p.startsWith('/api/admin/');
}

/**
 * Everything under /api/admin answers 404 while ADMIN_TOKEN is unset and 401 without the token,
 * before any routing: an unknown admin path or a wrong method tells an anonymous caller nothing
 * (it would otherwise get 404 or 405 and learn which routes exist). The admin router runs the
 * same check again on every route it serves, whatever spelling of the path reached it.
 */
export function adminGate(adminToken: string | undefined) {
  const requireToken = adminTokenCheck(adminToken);
  return function requireAdminToken(ctx: Context, next: Next) {
    return isAdminPath(ctx.path) ? requireToken(ctx, next) : next();
  };
}

/** 404 while ADMIN_TOKEN is unset, 401 without the right bearer token; otherwise on to `next`. */
function adminTokenCheck(adminToken: string | undefined) {
  const expected = adminToken ? digest(adminToken) : undefined;
  return function requireToken(ctx: Context, next: Next) {
    if (!expected) throw new FeatureDisabledError();
    const header = ctx.get('Authorization');
    // The scheme is case-insensitive (RFC 9110 §11.1).
    const token = /^bearer /i.test(header) ? header.slice(7).trim() : '';
    if (!token || !timingSafeEqual(digest(token), expected)) throw new AdminAuthError();
    return next();
  };
}

export function adminRoutes(deps: AppDeps) {
  const { flag, backends, models, metrics, audit, logger } = deps;
  const router = new Router({ prefix: '/api/admin' });
  router.use(adminTokenCheck(deps.config.adminToken));

  async function findUser(id: string | undefined) {
    const userId = idParam(id);
    const user = userId === undefined ? null : await models.User.findByPk(userId);
    if (!user) throw new NotFoundError('No such user');
    return user;
  }

  function describeFlag() {
    const d = flag.describe();
    return { ...d, backend: d.value, flags: { [FLAG_NAME]: { value: d.value, source: d.source } } };
  }

  router.get('/flags', (ctx) => {
    ctx.body = describeFlag();
  });
  router.get(`/flags/${FLAG_NAME}`, (ctx) => {
    ctx.body = describeFlag();
  });

  router.put(`/flags/${FLAG_NAME}`, async (ctx) => {
    const { backend } = parseBody(ctx, overrideInput);
    if (isDisabled(backends.stores[backend])) throw new InvalidInputError(`backend ${backend} is switched off on this server`, { backend: 'switched off' });
    // An explicit choice by an operator also ends an automatic rollback, on every instance.
    await flag.override.set(backend, 'admin');
    logger.warn({ event: 'flag_override', backend }, 'session-storage override set');
    ctx.body = describeFlag();
  });

  router.delete(`/flags/${FLAG_NAME}`, async (ctx) => {
    await flag.override.clear();
    logger.warn({ event: 'flag_override', backend: null }, 'session-storage override cleared');
    ctx.status = 204;
  });

  router.get('/users/:id/sessions', async (ctx) => {
    const user = await findUser(ctx.params.id);
    const sessions = await backends.listByUser(user.id);
    ctx.body = { user: publicUser(user), sessions: sessions.map((r) => sessionListEntry(r)) };
  });

  /**
   * While the database is down, a user cannot be looked up, listed or changed; what can still be
   * done is the revocation of all their sessions, which holds (held in Redis until the database
   * is back). Done (its audit row, uncounted: `count` 0, written once the database takes it),
   * then 503 says what was not.
   */
  async function orRevokeOnly<T>(ctx: Context, work: Promise<T>, what: string): Promise<T> {
    try {
      return await work;
    } catch (err) {
      const userId = idParam(ctx.params.id);
      const databaseDown = isDatabaseOutageError(err) || (err instanceof BackendUnavailableError && err.backend === 'database');
      if (!databaseDown || userId === undefined) throw err;
      await backends.revocations.revokeUser(userId);
      logger.warn({ event: 'revoked_during_outage', userId }, 'database down: every session of the user revoked, nothing else done');
      audit.record(clientInfo(ctx), { type: 'revoked', userId, reason: 'admin', actor: 'admin', count: 0 });
      throw new ServiceUnavailableError(`The database is down: every session of this user is revoked, but ${what}; retry once it is back`);
    }
  }

  router.delete('/users/:id/sessions', async (ctx) => {
    const user = await orRevokeOnly(ctx, findUser(ctx.params.id), 'they could not be counted');
    const ended = await orRevokeOnly(ctx, backends.logOutUser(user.id), 'they could not be counted');
    metrics.revocations.inc({ reason: 'admin' }, ended.length);
    audit.record(clientInfo(ctx), { type: 'revoked', userId: user.id, reason: 'admin', actor: 'admin', count: ended.length });
    ctx.body = { revoked: ended.length };
  });

  router.patch('/users/:id', async (ctx) => {
    // A malformed request is refused as such (400) whether or not the user exists.
    const patch = parseBody(ctx, userPatchInput);
    // A disabling that the database cannot take (down, or its disk full) still ends the sessions.
    const disabling = <T>(work: Promise<T>) => (patch.active === false ? orRevokeOnly(ctx, work, 'the account is not disabled yet') : work);
    const user = await disabling(findUser(ctx.params.id));
    const { active = user.active, role = user.role } = patch;
    const activeChanged = user.active !== active;
    const roleChanged = user.role !== role;
    user.active = active;
    user.role = role;
    await disabling(user.save());
    let revoked = 0;
    // A disabled user's sessions end. So do they when privileges change: a session's role is
    // fixed when it is issued, so the next login brings a new session id with the new role.
    if (!active || roleChanged) {
      const ended = await backends.logOutUser(user.id);
      revoked = ended.length;
      metrics.revocations.inc({ reason: !active ? 'disabled' : 'admin' }, revoked);
    }
    if (activeChanged) audit.record(clientInfo(ctx), { type: active ? 'enabled' : 'disabled', userId: user.id, reason: active ? null : 'disabled', actor: 'admin', count: revoked });
    if (roleChanged) audit.record(clientInfo(ctx), { type: 'revoked', userId: user.id, reason: 'role_change', actor: 'admin', count: revoked });
    ctx.body = { user: publicUser(user) };
  });

  router.post('/sessions/revoke-all', async (ctx) => {
    const { before, ended } = await backends.revokeAll();
    const revokedBefore = new Date(before).toISOString();
    logger.warn({ event: 'revoke_all', revokedBefore }, 'every session issued before now revoked');
    // Counted as sessions ended, as every other reason is, so that a dashboard shows a revoke-all
    // at its size beside them; once the database has counted them, which the answer does not wait for.
    void ended.then((count) => {
      metrics.revocations.inc({ reason: 'revoke_all' }, count ?? 0);
      audit.record(clientInfo(ctx), { type: 'revoke_all', reason: 'revoke_all', actor: 'admin', count: count ?? 0 });
      if (count === undefined) logger.warn({ event: 'revoke_all', revokedBefore }, 'the sessions a revoke-all ended could not be counted: the sessions table could not be read');
    });
    ctx.body = { revokedBefore };
  });

  return router;
}
