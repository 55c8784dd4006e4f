/**
 * Server-rendered pages for people in a browser, and their static assets.
 *
 * Pages read the session the session middleware opened (`ctx.state.sessions.current`); all
 * changes go through the JSON API, called by assets/app.js with the session's CSRF token, or
 * posted by the browser itself when JavaScript is off (form-navigation.ts answers those with a page).
 * Anonymous requests for the signed-in pages are redirected to /login; a signed-in visitor
 * of /login or /signup goes to the dashboard. Pages are never cached (`no-store`): they carry
 * the CSRF token and personal data, and the back button must not show a logged-out page.
 */
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { SessionRecord } from '../../sessions/session.js';
import type { Session } from '../../sessions/session.js';
import type { AppDeps } from '../deps.js';
import { NotFoundError } from '../errors.js';
import { Assets } from './assets.js';
import type { FormFlashes } from './form-flash.js';
import type { Viewer } from './layout.js';
import { accountPage, dashboardPage, loginPage, sessionsPage, signupPage, type SessionView } from './views.js';

function noStore(ctx: Context) {
  ctx.set('Cache-Control', 'no-store');
}

function sendPage(ctx: Context, body: string) {
  noStore(ctx);
  ctx.type = 'text/html; charset=utf-8';
  ctx.body = body;
}

/**
 * A value in the query a form posted without JavaScript came back with (form-navigation.ts):
 * `?error=` by default. Only ever looked up in a fixed table of sentences, never shown as it is.
 */
function formAnswerOf(ctx: Context, param = 'error'): string | undefined {
  const value = ctx.querystring === '' ? undefined : ctx.query[param];
  return typeof value === 'string' ? value : undefined;
}

function viewerOf(session: Session): Viewer {
  const { user, csrfToken } = session.data;
  return { user: { id: user.id, name: user.name, email: user.email }, csrfToken, handle: session.handle, platformId: platformOf(session)?.id ?? null, absoluteExpiresAt: session.record.absoluteExpiresAt };
}

function sessionView(r: SessionRecord, currentHandle: string): SessionView {
  return {
    handle: r.handle,
    backend: r.backend,
    createdAt: r.createdAt,
    lastActivity: r.lastActivity,
    expiresAt: r.expiresAt,
    ip: r.ip,
    userAgent: r.userAgent,
    current: r.handle === currentHandle,
  };
}

type PlatformContext = { id: number; name: string; type: string };

function platformOf(session: Session): PlatformContext | null {
  const p = session.data.platform as Partial<PlatformContext> | null | undefined;
  return p && typeof p.id === 'number' && typeof p.name === 'string' ? { id: p.id, name: p.name, type: String(p.type ?? '') } : null;
}

/**
 * This request's session as the page shows it: in the backend it is about to be written to. A
 * request after a flag change moves the session when it commits, after the page is rendered;
 * the JSON answers say the same (SessionControl.withBackend).
 */
function shownRecord(ctx: Context, session: Session): SessionRecord {
  return { ...session.record, backend: ctx.state.sessions.withBackend({ backend: session.record.backend }).backend };
}

/** Pages for signed-in users: anonymous visitors are sent to /login. */
async function signedIn(ctx: Context, next: Next) {
  if (!ctx.state.sessions.current) {
    // A session that cannot be read now is not an ended one: 503, rather than a trip to /login.
    ctx.state.sessions.mustKnow();
    noStore(ctx);
    ctx.redirect('/login');
    return;
  }
  await next();
}

/** /login and /signup: a signed-in visitor goes to the dashboard instead. */
async function anonymous(ctx: Context, next: Next) {
  if (ctx.state.sessions.current) {
    noStore(ctx);
    ctx.redirect('/');
    return;
  }
  await next();
}

export function pageRoutes(deps: AppDeps, flashes: FormFlashes, assets: Assets = new Assets()) {
  const { models, backends, config } = deps;
  const router = new Router();

  router.get('/assets/:name', (ctx) => {
    const name = ctx.params.name ?? '';
    if (!assets.serve(ctx, name)) throw new NotFoundError('No such asset');
  });

  router.get('/login', anonymous, (ctx) => sendPage(ctx, loginPage(assets, formAnswerOf(ctx), flashes.take(ctx, 'login'), formAnswerOf(ctx, 'signed_out'))));
  router.get('/signup', anonymous, (ctx) => sendPage(ctx, signupPage(assets, config.passwordMinLength, formAnswerOf(ctx), flashes.take(ctx, 'signup'))));

  router.get('/', signedIn, async (ctx) => {
    const session = ctx.state.sessions.current as Session;
    const platform = platformOf(session);
    const rows = await models.PlatformConnection.findAll({ where: { userId: session.data.user.id }, order: [['id', 'ASC']] });
    const activeId = platform?.id ?? session.data.platformId ?? null;
    sendPage(
      ctx,
      dashboardPage(assets, {
        viewer: viewerOf(session),
        session: sessionView(shownRecord(ctx, session), session.handle),
        platform,
        platforms: rows.map((p) => ({ id: p.id, name: p.name, type: p.type, active: p.id === activeId })),
        error: formAnswerOf(ctx),
        switchError: formAnswerOf(ctx, 'switch_error'),
        logoutError: formAnswerOf(ctx, 'logout_error'),
        flash: flashes.take(ctx, 'add-platform'),
      }),
    );
  });

  router.get('/sessions', signedIn, async (ctx) => {
    const session = ctx.state.sessions.current as Session;
    const records = await backends.listByUser(session.data.user.id);
    // The directory can lag a migration by a request; show this session as the request sees it,
    // with the IP and User-Agent the directory keeps (Redis and cookie sessions do not carry them).
    const shown = shownRecord(ctx, session);
    const current = (r: SessionRecord): SessionRecord => ({ ...shown, ip: r.ip, userAgent: r.userAgent });
    const list = records.map((r) => (r.handle === session.handle ? current(r) : r)).map((r) => sessionView(r, session.handle));
    if (!list.some((s) => s.current)) list.unshift(sessionView(shown, session.handle));
    list.sort((a, b) => Number(b.current) - Number(a.current) || b.lastActivity - a.lastActivity);
    sendPage(ctx, sessionsPage(assets, { viewer: viewerOf(session), sessions: list, revoked: formAnswerOf(ctx, 'revoked'), error: formAnswerOf(ctx) }));
  });

  router.get('/account', signedIn, (ctx) => {
    const session = ctx.state.sessions.current as Session;
    sendPage(ctx, accountPage(assets, { viewer: viewerOf(session), minPasswordLength: config.passwordMinLength, error: formAnswerOf(ctx), changed: ctx.query.changed === '1', flash: flashes.take(ctx, 'password') }));
  });

  /** The logout button's form target when JavaScript is off (app.js uses POST /api/logout). */
  router.post('/logout', (ctx) => {
    if (ctx.state.sessions.current || ctx.state.sessions.unknown) ctx.state.sessions.end('logout');
    noStore(ctx);
    ctx.status = 303;
    ctx.redirect('/login?signed_out=logout');
  });

  return router;
}
