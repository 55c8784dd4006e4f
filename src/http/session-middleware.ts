/**
 * The per-request session life cycle, and the only code that writes the session cookie.
 *
 * Before the route: read the cookie, open the session from whichever backend holds it.
 * After the route (not on a 5xx): end what was ended, create what was started, and for a
 * live session ask the flag where it belongs — migrate it there if it is elsewhere, else save
 * it if the route changed it, else record activity once per SESSION_TOUCH_INTERVAL.
 *
 * The cookie on the wire is session-cookie.ts, the endings session-endings.ts, the write of the
 * live session session-write.ts; this file opens the session and sets the order they run in.
 */
import type { Context, Next } from 'koa';
import type { BackendName, Config } from '../config/config.js';
import type { BackendFlag } from '../flags/backend-flag.js';
import type { Metrics } from '../metrics/metrics.js';
import { SessionBackends } from '../sessions/backends.js';
import { BackendUnavailableError } from '../sessions/errors.js';
import type { SessionRecord } from '../sessions/session.js';
import type { SessionAudit } from '../sessions/audit.js';
import { SessionControl } from './session-control.js';
import { SessionCookie } from './session-cookie.js';
import { SessionEndings } from './session-endings.js';
import { SessionWriter } from './session-write.js';

export interface SessionMiddlewareDeps {
  config: Config['sessions'];
  backends: SessionBackends;
  flag: BackendFlag;
  metrics: Metrics;
  audit: SessionAudit;
}

export function sessionMiddleware(deps: SessionMiddlewareDeps) {
  const { config, backends, flag, metrics, audit } = deps;
  const placement = { flag, backends };
  const cookie = new SessionCookie(config.cookieName, config.cookieSecure);
  const endings = new SessionEndings(backends, metrics, audit);
  const writer = new SessionWriter(deps, cookie);

  /** `cookieBackend`: the backend the request's cookie pointed at. */
  function commit(ctx: Context, control: SessionControl, cookieBackend: BackendName | undefined): Promise<void> {
    // Most requests end nothing: they pay no extra async frame for it. (A new session may end
    // others once it is stored: SESSION_MAX_PER_USER.)
    if (control.ending.length === 0 && !control.current?.isNew) return writer.write(ctx, control, cookieBackend);
    return (async () => {
      await endings.catchUpRotation(ctx, control);
      await endings.apply(ctx, control, 'same handle');
      // A logout clears the cookie only once the session has ended: one that fails (503) leaves
      // the browser its cookie, so the page can say so and the user can try again.
      if (!control.current) await endings.apply(ctx, control, 'others');
      await writer.write(ctx, control, cookieBackend);
      if (control.current) await endings.apply(ctx, control, 'others');
    })();
  }

  /**
   * The first cookie of our name need not be ours (session-cookie.ts): rather than treat such a
   * user as logged out for good, the next few are tried too. Only when the first does not open,
   * so the usual request parses the header once.
   */
  async function openAnother(header: string, first: string, unknown: Error | undefined): Promise<[string, SessionRecord | undefined, Error | undefined]> {
    for (const value of cookie.othersIn(header, first)) {
      const opened = await open(value);
      if (opened instanceof Error) unknown ??= opened;
      else if (opened) return [value, opened, undefined];
    }
    return [first, undefined, unknown];
  }

  /** The session a cookie names; undefined if none, or the error of a backend that cannot say now. */
  async function open(value: string): Promise<SessionRecord | BackendUnavailableError | undefined> {
    try {
      return await backends.open(value);
    } catch (err) {
      if (err instanceof BackendUnavailableError) return err;
      throw err;
    }
  }

  return async function sessions(ctx: Context, next: Next) {
    // Koa reads the client's address from the socket on first use (and keeps it): read after a
    // slow step (a signup's password hash) of a request the browser dropped meanwhile (a
    // double-click), it was '' in the session list and the audit row.
    void ctx.ip;
    let raw = cookie.read(ctx);
    const opened = raw ? await open(raw) : undefined;
    let loaded = opened instanceof Error ? undefined : opened;
    let unknown: Error | undefined = opened instanceof Error ? opened : undefined;
    if (raw && !loaded) [raw, loaded, unknown] = await openAnother(ctx.get('Cookie'), raw, unknown);
    const control = new SessionControl(loaded, ctx, config, placement);
    control.unknown = unknown;
    // A cookie that does not open is left alone rather than cleared: another tab may have
    // just replaced it (a rotation), and clearing would log that tab out too.
    // `?passive=1` marks a background check (the pages' polling): not activity, no touch.
    control.passive = ctx.method === 'GET' && ctx.querystring !== '' && ctx.query.passive === '1';
    ctx.state.sessions = control;
    await next();
    if (ctx.status >= 500) return;
    await commit(ctx, control, raw ? SessionBackends.backendOf(raw) : undefined);
  };
}
