/** What a signed-in user changes of their own: the session's preferences, the account's password. */
import Router from '@koa/router';
import { z } from 'zod';
import { hashPassword, passwordProblem, verifyPassword } from '../../auth/passwords.js';
import { applyMergePatch } from '../../sessions/session.js';
import { clientInfo } from '../client-info.js';
import type { AppDeps } from '../deps.js';
import { InvalidCredentialsError, InvalidInputError, UnauthenticatedError } from '../errors.js';
import { csrfField, parseBody, password } from '../validation.js';
import { requireSession } from './auth.js';

const passwordInput = z.object({ currentPassword: password, newPassword: password, ...csrfField }).strict();
const MAX_PREFERENCES = 20;
const preferencesInput = z
  .object({
    preferences: z
      .record(
        z.string(),
        z.union([z.string().max(200, 'A preference value has at most 200 characters'), z.number(), z.boolean(), z.null()], {
          error: (issue) => (issue.code === 'invalid_union' ? 'A preference is a string, a number, true, false, or null to remove it' : undefined),
        }),
        { error: (issue) => (issue.code === 'invalid_type' ? 'Send an object of preference names and values' : undefined) },
      )
      .refine((p) => Object.keys(p).every((name) => name.length <= 40), 'A preference name has at most 40 characters')
      .refine((p) => Object.keys(p).length <= MAX_PREFERENCES, `At most ${MAX_PREFERENCES} preferences`),
    ...csrfField,
  })
  .strict();

export function accountRoutes(deps: AppDeps) {
  const { models, config, metrics, limiter, backends } = deps;
  const router = new Router();

  /** Small per-session preferences (theme, layout…): the simplest session write. */
  router.patch('/api/session', async (ctx) => {
    const session = requireSession(ctx);
    const { preferences } = parseBody(ctx, preferencesInput);
    // Merged into what is there (JSON merge patch: null removes a key), at most 20 in all.
    if (Object.keys(applyMergePatch(session.data.preferences, preferences)).length > MAX_PREFERENCES) {
      const message = `At most ${MAX_PREFERENCES} preferences in all; send null for a key to remove it`;
      throw new InvalidInputError(`preferences: ${message}`, { preferences: message });
    }
    // As a patch, so that another tab's preference saved meanwhile stays (Session#patch).
    session.patch('preferences', preferences);
    ctx.body = { preferences: session.data.preferences };
  });

  router.post('/api/password', async (ctx) => {
    const session = requireSession(ctx);
    const input = parseBody(ctx, passwordInput);
    const user = await models.User.findByPk(session.data.user.id);
    if (!user || !user.active) throw new UnauthenticatedError();
    const attempt = await limiter.attempt(user.email, ctx.ip);
    try {
      if (!(await verifyPassword(user.passwordHash, input.currentPassword))) {
        await attempt.failed();
        throw new InvalidCredentialsError(user.id);
      }
      await attempt.succeeded();
    } finally {
      attempt.release();
    }
    const problem = passwordProblem(input.newPassword, config.passwordMinLength, [user.email, user.email.split('@')[0] ?? '', user.name]);
    if (problem) throw new InvalidInputError(`newPassword: ${problem}`, { newPassword: problem });
    const passwordHash = await hashPassword(input.newPassword);
    // The checks above take seconds: the session may have been logged out or revoked, or the
    // account disabled, meanwhile. Then nothing changes, and no new id brings the session back.
    // (A logout landing after this check, while the update below waits, does not stop the
    // change the user asked for: it is made, and the answer is 204 with the cookie cleared —
    // the session middleware's catchUpRotation (session-endings.ts) finds the old id ended and stores no new one.)
    if (!(await models.User.isActive(user.id)) || !(await backends.isLive(session.record))) throw new UnauthenticatedError();
    // Only over the hash that was checked: of two changes at once (two tabs, two devices) the
    // first saved wins and ends the other's session, which then changes nothing; each saving
    // over the other, both were told 204, both sessions ended and one new password was lost.
    const [changed] = await models.User.update({ passwordHash }, { where: { id: user.id, passwordHash: user.passwordHash, active: true } });
    if (changed !== 1) throw new UnauthenticatedError();
    user.passwordHash = passwordHash;
    // Every session issued before now dies (cookie-held ones included); this one goes on under a new id.
    const now = Date.now();
    const others = await backends.logOutUser(user.id, { notBefore: now, exceptHandle: session.handle });
    metrics.revocations.inc({ reason: 'password_change' }, others.length);
    deps.audit.record(clientInfo(ctx), { type: 'revoked', userId: user.id, reason: 'password_change', count: others.length });
    ctx.state.sessions.rotate(now);
    ctx.status = 204;
  });

  return router;
}
