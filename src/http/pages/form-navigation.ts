/**
 * The pages' forms also work without JavaScript: the browser then posts them to the API itself,
 * as a top-level navigation, and would show the person the API's JSON. Such a post is told
 * apart by `Sec-Fetch-Dest: document` (set by the browser; no page script can set it, and
 * app.js's fetch() sends `empty`), and answered with a page to go to (303 See Other): the next
 * page when the API succeeded, or the form's page again with the error's code, which the page
 * turns into a sentence (views.ts), and what the person typed and the API's sentence for each
 * field it refused (form-flash.ts). Every other client gets the API's answers unchanged.
 */
import type { Context, Next } from 'koa';
import { textRecord, type FormFlashes } from './form-flash.js';

interface FormTarget {
  /** Where a person goes once the form has done its work. */
  done: string;
  /** The page the form is on, shown again with the error. */
  form: string;
  /** The query parameter that brings the error's code back (`error`): a page with two forms tells them apart. */
  errorParam?: string;
  /**
   * A form with fields: its id in the page, the fields typed back into it after an error (never
   * a password), and the field that an error code without per-field messages is about (as
   * app.js puts it when JavaScript runs: the taken email, the wrong current password).
   */
  fields?: { id: string; keep: readonly string[]; codeField?: Readonly<Record<string, { field: string; message?: string }>> };
}

/** The API routes the pages' forms post to, by path; `:param` segments are any one segment. */
const FORMS: ReadonlyArray<readonly [RegExp, FormTarget]> = [
  [/^\/api\/login$/, { done: '/', form: '/login', fields: { id: 'login', keep: ['email'] } }],
  [/^\/api\/signup$/, { done: '/', form: '/signup', fields: { id: 'signup', keep: ['name', 'email'], codeField: { email_taken: { field: 'email' } } } }],
  [/^\/api\/platforms$/, { done: '/', form: '/', fields: { id: 'add-platform', keep: ['name', 'type'] } }],
  [/^\/api\/platforms\/[^/]+\/activate$/, { done: '/', form: '/', errorParam: 'switch_error' }],
  [/^\/api\/password$/, { done: '/account?changed=1', form: '/account', fields: { id: 'password', keep: [], codeField: { invalid_credentials: { field: 'currentPassword', message: 'Your current password is not correct.' } } } }],
  [/^\/api\/sessions\/revoke-others$/, { done: '/sessions?revoked=others', form: '/sessions' }],
  [/^\/api\/sessions\/[^/]+\/revoke$/, { done: '/sessions?revoked=one', form: '/sessions' }],
  // The logout button (dashboard, sessions page) posts here without JavaScript. Its token out of
  // date (another tab logged in again meanwhile): the dashboard with "This page had expired" beside
  // the top bar's logout button (not in the add-platform form's box), and a button with the
  // current token, rather than the API's JSON and no logout.
  [/^\/logout$/, { done: '/login?signed_out=logout', form: '/', errorParam: 'logout_error' }],
];

function formTarget(path: string): FormTarget | undefined {
  for (const [pattern, target] of FORMS) if (pattern.test(path)) return target;
  return undefined;
}

/** The stable code of the API's error answer (`{error: {code}}`), if it is one. */
function errorCode(body: unknown): string {
  const code = (body as { error?: { code?: unknown } } | null)?.error?.code;
  return typeof code === 'string' && /^[a-z_]{1,40}$/.test(code) ? code : 'failed';
}

/** The API's sentence for each field it refused (`{error: {fields}}`), as field name → text. */
function fieldErrors(body: unknown): Record<string, string> {
  return textRecord((body as { error?: { fields?: unknown } } | null)?.error?.fields) ?? {};
}

function typedValues(body: unknown, keep: readonly string[]): Record<string, string> {
  const posted = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  return Object.fromEntries(keep.flatMap((name) => (typeof posted[name] === 'string' ? [[name, posted[name]]] : [])));
}

/**
 * Outside the error handler, so that it sees the API's final answer, errors included. Every
 * request passes through here: any other hands on `next()`'s promise without an async frame.
 */
/** A form the browser posted by itself (JavaScript off), answered with a page. A JSON request never is one. */
export function isFormNavigation(ctx: Context): boolean {
  return ctx.method === 'POST' && ctx.get('Sec-Fetch-Dest') === 'document' && Boolean(ctx.is('urlencoded', 'multipart', 'text/plain'));
}

export function formNavigation(flashes: FormFlashes) {
  return function formNavigation(ctx: Context, next: Next): Promise<void> {
    if (!isFormNavigation(ctx)) return next();
    const target = formTarget(ctx.path);
    return target ? answerWithPage(ctx, next, target, flashes) : next();
  };
}

async function answerWithPage(ctx: Context, next: Next, target: FormTarget, flashes: FormFlashes): Promise<void> {
  await next();
  const code = ctx.status < 400 ? undefined : errorCode(ctx.body);
  // Logged out meanwhile: the form's page would only send the person on to /login, without the reason.
  const location = code === undefined ? target.done : code === 'unauthenticated' ? `/login?error=${code}` : `${target.form}?${target.errorParam ?? 'error'}=${code}`;
  if (code !== undefined && code !== 'unauthenticated' && target.fields) {
    const fields = fieldErrors(ctx.body);
    const mapped = target.fields.codeField?.[code];
    const message = mapped?.message ?? (ctx.body as { error?: { message?: unknown } } | null)?.error?.message;
    if (mapped && Object.keys(fields).length === 0 && typeof message === 'string') fields[mapped.field] = message;
    const values = typedValues(ctx.request.body, target.fields.keep);
    if (Object.keys(fields).length + Object.keys(values).length > 0) flashes.keep(ctx, { form: target.fields.id, fields, values });
  }
  // The API's Set-Cookie (a login, a rotated id) goes with the redirect; the body does not.
  ctx.set('Cache-Control', 'no-store');
  ctx.status = 303;
  ctx.redirect(location);
}
