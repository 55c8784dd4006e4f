/** Sign up, log in, log out, who am I. (Changing what an account or session holds: account.ts.) */
import Router from '@koa/router';
import type { Context } from 'koa';
import { UniqueConstraintError } from 'sequelize';
import { z } from 'zod';
import { hashPassword, passwordProblem, verifyPassword } from '../../auth/passwords.js';
import { describeSession } from '../../sessions/session.js';
import type { AppDeps } from '../deps.js';
import { EmailTakenError, InvalidCredentialsError, InvalidInputError, TooManyAttemptsError, UnauthenticatedError } from '../errors.js';
import { requireSameOrigin } from '../origin.js';
import { isFormNavigation } from '../pages/form-navigation.js';
import type { Session, SessionRecord } from '../../sessions/session.js';
import type { SessionControl } from '../session-control.js';
import { publicUser } from '../users.js';
import { csrfField, email, name, newEmail, parseBody, password } from '../validation.js';

const signupInput = z.object({ email: newEmail, password, name, ...csrfField }).strict();
const loginInput = z.object({ email, password, ...csrfField }).strict();
/** How recent an account a signup form posted twice may log in to (see `resubmittedSignup`). */
const RESUBMITTED_SIGNUP_MS = 60_000;

export function requireSession(ctx: Context): Session {
  const session = ctx.state.sessions.current;
  if (session) return session;
  ctx.state.sessions.mustKnow();
  throw new UnauthenticatedError();
}

/** The answer that carries the CSRF token: never kept by a cache. */
function loggedIn(ctx: Context, session: Session) {
  ctx.set('Cache-Control', 'no-store');
  return { user: session.data.user, session: ctx.state.sessions.withBackend(describeSession(session.record)), csrfToken: session.data.csrfToken };
}

export function authRoutes(deps: AppDeps) {
  const { models, config, metrics, limiter, backends, logger } = deps;
  const router = new Router();

  /**
   * SESSION_MAX_PER_USER, once the login's new session (`own`) is stored — a login that fails
   * ends nothing: of the user's live sessions, the newest `max` stay and the others end. Listed
   * after the store, not before, so that of logins racing each other the later listing sees
   * them all, and every listing picks the same newest ones (by creation, then handle): each
   * ends the same others. The session this browser had before (`replaced`) ends with the login
   * anyway and does not count; nor does the limit ever end `own` — its answer is on its way.
   */
  async function enforceSessionLimit(userId: number, own: SessionRecord, replaced: string | undefined, control: SessionControl) {
    const max = config.sessions.maxPerUser;
    // A login whose session was revoked as it was stored (a password or role change overlapping
    // its check) is one that failed: it ends none of the user's working sessions.
    if (max === 0 || backends.revocations.isRevoked(own)) return;
    let live: SessionRecord[];
    try {
      live = (await backends.listByUser(userId)).filter((r) => r.handle !== replaced);
    } catch (err) {
      // The session is stored and the user in: a limit that cannot be checked now is checked at the next login.
      logger.warn({ err, userId }, 'SESSION_MAX_PER_USER not enforced: the sessions could not be listed');
      return;
    }
    if (!live.some((r) => r.handle === own.handle)) live.push(own);
    live.sort((a, b) => a.createdAt - b.createdAt || (a.handle < b.handle ? -1 : a.handle > b.handle ? 1 : 0));
    for (const record of live.slice(0, Math.max(0, live.length - max))) if (record.handle !== own.handle) control.endOther(record, 'limit');
  }

  /**
   * Without JavaScript a double-click on "Create account" posts the form twice: the browser
   * drops the first answer (and its cookie) while the server still creates the account, and
   * the second was told its own new account exists, signed out. A form post for an account made
   * moments ago, with its password, is that second post: it logs in instead. Anything else (an
   * API client, an older account, another password) gets 409 email_taken as before.
   */
  async function resubmittedSignup(ctx: Context, input: { email: string; password: string; name: string }) {
    if (!isFormNavigation(ctx)) return undefined;
    const existing = await models.User.findOne({ where: { email: input.email } });
    // The same form posted again: the same name too (someone else trying the address has to know it).
    if (!existing || existing.name !== input.name || Date.now() - existing.createdAt.getTime() > RESUBMITTED_SIGNUP_MS) return undefined;
    // Checked as a login is (a wrong password counts against the login limits), answered as a signup.
    return logInAs(ctx, input).catch((err: unknown) => {
      if (err instanceof InvalidCredentialsError || err instanceof TooManyAttemptsError) return undefined;
      throw err;
    });
  }

  router.post('/api/signup', requireSameOrigin, async (ctx) => {
    const input = parseBody(ctx, signupInput);
    const problem = passwordProblem(input.password, config.passwordMinLength, [input.email, input.email.split('@')[0] ?? '', input.name]);
    if (problem) throw new InvalidInputError(`password: ${problem}`, { password: problem });
    const user = (await models.User.findOne({ where: { email: input.email } }))
      ? undefined
      : await models.User.create({ email: input.email, name: input.name, passwordHash: await hashPassword(input.password) }).catch((err: unknown) => {
          if (err instanceof UniqueConstraintError) return undefined;
          throw err;
        });
    if (!user) {
      const login = await resubmittedSignup(ctx, input);
      if (!login) throw new EmailTakenError();
      ctx.body = loggedIn(ctx, startLoggedIn(ctx, login));
      return;
    }
    // No backend could take the session (503): the account goes too, so that a retry can succeed.
    const session = ctx.state.sessions.start(publicUser(user), { undo: () => user.destroy() });
    ctx.status = 201;
    ctx.body = loggedIn(ctx, session);
  });

  /**
   * The account that `input` logs in to, or InvalidCredentialsError. The attempt holds its point
   * of the limiter while the password is checked (LoginLimiter); a check that could not be made
   * (a busy hash pool, the database) counts for nothing.
   */
  async function logInAs(ctx: Context, input: { email: string; password: string }) {
    const attempt = await limiter.attempt(input.email, ctx.ip).catch((err: unknown) => {
      metrics.logins.inc({ outcome: 'rate_limited' });
      throw err;
    });
    try {
      const checked = await models.User.findOne({ where: { email: input.email } });
      const ok = await verifyPassword(checked?.passwordHash, input.password);
      if (!ok || !checked) {
        await attempt.failed();
        metrics.logins.inc({ outcome: 'failure' });
        throw new InvalidCredentialsError(checked?.id);
      }
      // Read again after the password check, which takes a while (seconds behind a queue of
      // logins): an account disabled, or its password or role changed meanwhile, must not get a
      // session that the change could no longer end. The session is dated from this second read
      // (StartHooks.accountReadAt), not the first, so that a change or a revoke-all made during
      // the check does not leave the login answered 200 with a session already ended.
      const { user, readAt } = await models.User.reread(checked.id, () => backends.revocations.issuedNow());
      // A disabled account gets the same answer as a wrong password, and counts as one for the
      // limits (a reset counter would tell which guess was right); so does a password that was
      // right when checked and has been changed since.
      if (!user?.active || user.passwordHash !== checked.passwordHash) {
        await attempt.failed();
        metrics.logins.inc({ outcome: user?.active ? 'failure' : 'disabled' });
        throw new InvalidCredentialsError(checked.id);
      }
      await attempt.succeeded();
      return { user, readAt };
    } finally {
      attempt.release();
    }
  }

  /** The session of a login whose password `logInAs` checked. */
  function startLoggedIn(ctx: Context, { user, readAt }: Awaited<ReturnType<typeof logInAs>>) {
    const control = ctx.state.sessions;
    const replaced = control.current?.handle;
    // A success once the session is stored: a login answered 503 is not one.
    return control.start(publicUser(user), {
      // A password changed, a role changed or the account disabled while this login checked the
      // old password (after its second look at the account, too) ends the session it gets.
      accountReadAt: readAt,
      stored: (own) => {
        metrics.logins.inc({ outcome: 'success' });
        return enforceSessionLimit(user.id, own, replaced, control);
      },
    });
  }

  router.post('/api/login', requireSameOrigin, async (ctx) => {
    const input = parseBody(ctx, loginInput);
    ctx.body = loggedIn(ctx, startLoggedIn(ctx, await logInAs(ctx, input)));
  });

  router.post('/api/logout', async (ctx) => {
    ctx.state.sessions.end('logout');
    ctx.status = 204;
  });

  router.get('/api/session', async (ctx) => {
    const session = ctx.state.sessions.current;
    if (!session) {
      ctx.state.sessions.mustKnow();
      throw new UnauthenticatedError();
    }
    ctx.body = { authenticated: true, ...loggedIn(ctx, session), platform: session.data.platform ?? null, preferences: session.data.preferences ?? {} };
  });

  return router;
}
