/**
 * The pages' forms also work without JavaScript: the browser then posts them to the API itself,
 * as a top-level navigation, and would show the person the API's JSON. Such a post is told
 * apart by `Sec-Fetch-Dest: document` (set by the browser; no page script can set it, and
 * app.js's fetch() sends `empty`), and answered with a page to go to (303 See Other): the next
 * page when the API succeeded, or the form's page again with the error's code, which the page
 * turns into a sentence (views.ts). Every other client gets the API's answers unchanged.
 */
import type { Context, Next } from 'koa';

interface FormTarget {
  /** Where a person goes once the form has done its work. */
  done: string;
  /** The page the form is on, shown again with the error. */
  form: string;
}

const FORMS: Readonly<Record<string, FormTarget>> = {
  '/api/login': { done: '/', form: '/login' },
  '/api/signup': { done: '/', form: '/signup' },
  '/api/platforms': { done: '/', form: '/' },
  '/api/password': { done: '/account?changed=1', form: '/account' },
};

/** The stable code of the API's error answer (`{error: {code}}`), if it is one. */
function errorCode(body: unknown): string {
  const code = (body as { error?: { code?: unknown } } | null)?.error?.code;
  return typeof code === 'string' && /^[a-z_]{1,40}$/.test(code) ? code : 'failed';
}

/**
 * Outside the error handler, so that it sees the API's final answer, errors included. Every
 * request passes through here: any other hands on `next()`'s promise without an async frame.
 */
export function formNavigation() {
  return function formNavigation(ctx: Context, next: Next): Promise<void> {
    const target = ctx.method === 'POST' ? FORMS[ctx.path] : undefined;
    // A form's body: a JSON request is never one the browser posted by itself.
    if (!target || ctx.get('Sec-Fetch-Dest') !== 'document' || !ctx.is('urlencoded', 'multipart', 'text/plain')) return next();
    return answerWithPage(ctx, next, target);
  };
}

async function answerWithPage(ctx: Context, next: Next, target: FormTarget): Promise<void> {
  await next();
  const code = ctx.status < 400 ? undefined : errorCode(ctx.body);
  // Logged out meanwhile: the form's page would only send the person on to /login, without the reason.
  const location = code === undefined ? target.done : `${code === 'unauthenticated' ? '/login' : target.form}?error=${code}`;
  // The API's Set-Cookie (a login, a rotated id) goes with the redirect; the body does not.
  ctx.set('Cache-Control', 'no-store');
  ctx.status = 303;
  ctx.redirect(location);
}
