/**
 * CSRF: a request that changes state and comes with a live session must carry that session's
 * token in `X-CSRF-Token` (or the `_csrf` form field). Login and signup have their own Origin
 * check (origin.ts); admin routes authenticate by bearer token, which browsers never send on
 * their own, so neither needs the token.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { CsrfError, UnsupportedMediaTypeError } from './errors.js';
import { isAdminPath } from './routes/admin.js';

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);
const EXEMPT = new Set(['/api/login', '/api/signup']);

/** As the router matches paths: in any letter case, with or without one trailing slash. */
function isExempt(path: string): boolean {
  return EXEMPT.has(path.toLowerCase().replace(/\/$/, '')) || isAdminPath(path);
}

function matches(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * `routes`: which requests a route takes. One that none does changes nothing: it gets the
 * router's 404 or 405, not a CSRF refusal that would send a client looking for the wrong fault.
 */
export function csrfProtection(routes: { match(path: string, method: string): { route: boolean } }) {
  // Not async: a check before next() needs no frame of its own (koa-compose turns a throw here
  // into a rejection, as it would in an async function), and every request passes through.
  return function csrf(ctx: Context, next: Next) {
    const session = ctx.state.sessions.current;
    if (session && !SAFE.has(ctx.method) && !isExempt(ctx.path) && routes.match(ctx.path, ctx.method).route) {
      const body = ctx.request.body as { _csrf?: unknown } | undefined;
      const given = ctx.get('X-CSRF-Token') || (typeof body?._csrf === 'string' ? body._csrf : '');
      if (!given && ctx.request.is('multipart')) throw new UnsupportedMediaTypeError('Send forms as application/x-www-form-urlencoded (or JSON): multipart bodies are not read');
      if (!given || !matches(given, session.data.csrfToken)) throw new CsrfError();
    }
    return next();
  };
}
