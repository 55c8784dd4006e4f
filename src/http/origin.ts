/**
 * Login and signup carry no session yet, so no CSRF token: instead a cross-site request is
 * refused by its Origin (or, failing that, Sec-Fetch-Site). Same-origin and non-browser
 * clients (no Origin header) pass. Under the pages' `Referrer-Policy: no-referrer`, Chromium
 * sends `Origin: null` on a form post from our own page; it also sends `Sec-Fetch-Site:
 * same-origin`, which no page script can set, and that is taken as the answer.
 */
import type { Context, Next } from 'koa';
import { CsrfError } from './errors.js';

export async function requireSameOrigin(ctx: Context, next: Next) {
  const origin = ctx.get('Origin');
  if (origin) {
    let host: string | undefined;
    try {
      host = origin === 'null' ? undefined : new URL(origin).host;
    } catch {
      host = undefined;
    }
    const sameSite = host === ctx.host || (origin === 'null' && ctx.get('Sec-Fetch-Site') === 'same-origin');
    if (!sameSite) throw new CsrfError('Cross-site requests are not allowed here');
  } else if (ctx.get('Sec-Fetch-Site') === 'cross-site') {
    throw new CsrfError('Cross-site requests are not allowed here');
  }
  await next();
}
