/**
 * The per-request session life cycle, and the only code that writes the session cookie.
 *
 * Before the route: read the cookie, open the session from whichever backend holds it.
 * After the route (not on a 5xx): end what was ended, create what was started, and for a
 * live session ask the flag where it belongs — migrate it there if it is elsewhere, else save
 * it if the route changed it, else record activity once per SESSION_TOUCH_INTERVAL.
 */
import type { Context, Next } from 'koa';
import type { BackendName, Config } from '../config/config.js';
import type { BackendFlag } from '../flags/backend-flag.js';
import type { Metrics, RevocationReason } from '../metrics/metrics.js';
import { SessionBackends, type SaveConcurrency, type Written } from '../sessions/backends.js';
import { BackendUnavailableError, SessionTooLargeError } from '../sessions/errors.js';
import { clientInfo } from './client-info.js';
import { SessionControl } from './session-control.js';
import { SessionConflictHttpError } from './errors.js';
import { expiryAt, Session, type SessionData, type SessionRecord, type Timeouts } from '../sessions/session.js';
import type { AuditEntry, SessionAudit } from '../sessions/audit.js';

export interface SessionMiddlewareDeps {
  config: Config['sessions'];
  backends: SessionBackends;
  flag: BackendFlag;
  metrics: Metrics;
  audit: SessionAudit;
}

/** `record` with this request counted as activity: the idle expiry moves (a touch). */
function asTouched(record: SessionRecord, now: number, timeouts: Timeouts): SessionRecord {
  return { ...record, lastActivity: now, expiresAt: expiryAt({ lastActivity: now, absoluteExpiresAt: record.absoluteExpiresAt }, timeouts) };
}

/** A changed session as a save writes it: a change is activity too, and a new version. */
function asSaved(session: Session, now: number, timeouts: Timeouts): SessionRecord {
  return { ...asTouched(session.record, now, timeouts), version: session.record.version + 1 };
}

/** What a save of `session` merges with a concurrent one (backends.ts). */
function concurrencyOf(session: Session): SaveConcurrency {
  return { readVersion: session.record.version, changedKeys: session.changes, patches: session.patches };
}

export function sessionMiddleware({ config, backends, flag, metrics, audit }: SessionMiddlewareDeps) {
  const placement = { flag, backends };
  // Written by hand rather than through ctx.cookies: the attributes in their canonical spelling
  // (the `cookies` package lowercases them), and Secure decided by COOKIE_SECURE alone — behind a
  // TLS-terminating proxy Koa may not know the request was https.
  const attributes = `; Path=/${config.cookieSecure ? '; Secure' : ''}; HttpOnly; SameSite=Lax`;
  function writeCookie(ctx: Context, value: string, expires: Date, extra = '') {
    const others = ([] as string[]).concat(ctx.response.get('Set-Cookie') || []).filter((c) => !c.startsWith(`${config.cookieName}=`));
    ctx.set('Set-Cookie', [...others, `${config.cookieName}=${value}; Expires=${expires.toUTCString()}${extra}${attributes}`]);
  }
  function setCookie(ctx: Context, written: Written) {
    writeCookie(ctx, written.cookieValue, new Date(written.record.absoluteExpiresAt));
  }
  function clearCookie(ctx: Context) {
    writeCookie(ctx, '', new Date(0), '; Max-Age=0');
  }

  /**
   * Ends what the route ended. A session of the current one's handle (the old id of a rotation)
   * ends before the new id is written (the handle is unique in the directory); the others —
   * the session a login replaces, the oldest beyond the per-user limit — only once the new
   * session is stored, so that a login that fails ends nothing.
   */
  async function applyEndings(ctx: Context, control: SessionControl, which: 'same handle' | 'others') {
    const handle = control.current?.handle;
    const seen = new Set<string>();
    for (const { record, reason, quiet, bySystem, auditReason } of control.ending) {
      if ((record.handle === handle) !== (which === 'same handle') || seen.has(record.idHash)) continue;
      seen.add(record.idHash);
      await backends.end(record);
      if (reason) metrics.revocations.inc({ reason });
      audit.record(clientInfo(ctx), bySystem ? { type: 'revoked', record, reason: reason ?? null, actor: 'system' } : auditReason ? { type: 'destroyed', record, reason: auditReason } : endedByUser(record, handle, reason, quiet));
    }
  }

  /**
   * What the audit says of a session the user's own request ended: a quiet ending of the current
   * handle is its old id (a rotation); of another handle, the session a login replaced.
   */
  function endedByUser(record: SessionRecord, current: string | undefined, reason: RevocationReason | undefined, quiet: boolean | undefined): AuditEntry {
    if (!quiet) return { type: 'destroyed', record, reason: reason ?? null };
    return record.handle === current ? { type: 'rotated', record, reason: null } : { type: 'destroyed', record, reason: 'replaced_by_login' };
  }

  /**
   * Served (and maybe saved or touched) from the database copy of a session whose cookie names
   * another backend, which is down: the copy now holds it, and the directory should say so.
   */
  function heldByCopy(record: SessionRecord, cookieBackend: BackendName | undefined): boolean {
    return record.backend === 'database' && cookieBackend !== undefined && cookieBackend !== 'database';
  }

  /**
   * A rotation (password change) copies the session as this request read it; another request
   * may have saved the old id since (a platform switch in another tab, during the seconds a
   * password check takes). The new id starts from that save, with this request's own changes
   * on top, rather than silently dropping it. A save that lands later still finds the old id
   * ended, and answers 409.
   */
  async function catchUpRotation(ctx: Context, control: SessionControl) {
    const { rotatedFrom: old, current } = control;
    if (!old || !current?.isNew || !old.record.id) return;
    const latest = await backends.latest(old.record).catch(() => null);
    // The client has gone (a browser that gave up waiting on a slow change): nobody would receive
    // the new id's cookie, and stored it would be a live session that nobody holds, listed under
    // the old one's handle until its idle expiry. The old id ends all the same (below).
    if (latest !== undefined && ctx.req.socket.destroyed) {
      control.current = undefined;
      control.clearCookie = true;
      // Audited as what it is: with no new id, the old one would read as replaced by a login.
      const ending = control.ending.findIndex((e) => e.record === old.record);
      if (ending >= 0) control.ending[ending] = { record: old.record, auditReason: 'client_gone' };
      return;
    }
    if (latest === undefined) {
      // Logged out or revoked after the route checked (backends.isLive): the new id would bring
      // the session back. It is not stored, and the browser's cookie is cleared.
      control.current = undefined;
      control.clearCookie = true;
      const ending = control.ending.findIndex((e) => e.record === old.record);
      if (ending >= 0) control.ending.splice(ending, 1); // ended already, by whoever logged it out
      return;
    }
    if (!latest || latest.version <= old.record.version) return;
    const data: Record<string, unknown> = { ...latest.data };
    for (const key of [...old.changes, ...current.changes]) data[key] = current.data[key];
    current.record = { ...current.record, data: data as SessionData, version: latest.version + 1 };
  }

  /** `cookieBackend`: the backend the request's cookie pointed at. */
  function commit(ctx: Context, control: SessionControl, cookieBackend: BackendName | undefined): Promise<void> {
    // Most requests end nothing: they pay no extra async frame for it. (A new session may end
    // others once it is stored: SESSION_MAX_PER_USER.)
    if (control.ending.length === 0 && !control.current?.isNew) return write(ctx, control, cookieBackend);
    return (async () => {
      await catchUpRotation(ctx, control);
      await applyEndings(ctx, control, 'same handle');
      // A logout clears the cookie only once the session has ended: one that fails (503) leaves
      // the browser its cookie, so the page can say so and the user can try again.
      if (!control.current) await applyEndings(ctx, control, 'others');
      await write(ctx, control, cookieBackend);
      if (control.current) await applyEndings(ctx, control, 'others');
    })();
  }

  async function write(ctx: Context, control: SessionControl, cookieBackend: BackendName | undefined) {
    const session = control.current;
    if (!session) {
      if (control.clearCookie) clearCookie(ctx);
      return;
    }
    // While the chosen backend's breaker is open, sessions stay in (or go to) the fallback.
    const { backend: target, source } = control.destination();
    const now = Date.now();
    const touchDue = !control.passive && now - session.record.lastActivity >= config.touchIntervalMs;
    let written: Written | undefined;
    let touched: Written | undefined | 'unwritten';
    let moved = false;
    let tooLarge = false;
    if (!session.isNew && target !== session.record.backend) {
      try {
        // A changed session moves as a save would write it (a new version): a request of the same
        // session moving it at the same time then merges rather than overwrites (backends.migrate).
        // An unchanged one moves touched when a touch is due: instances that disagree about the
        // flag move it on every request, and each is the user's activity.
        const cause = source === 'fallback' ? 'fallback' : 'flag';
        written = session.isChanged
          ? await backends.migrate(asSaved(session, now, config), target, cause, concurrencyOf(session), control.readAt)
          : await backends.migrate(touchDue ? asTouched(session.record, now, config) : session.record, target, cause, undefined, control.readAt);
        moved = true;
      } catch (err) {
        // Too large for the backend the flag chose (a sealed cookie holds ≈ 3.8 KB): nothing was
        // written, and the session stays where it is, as if the flag had not changed — a flag
        // flip never logs anybody out. It moves on a later request, once it fits.
        if (!(err instanceof SessionTooLargeError)) throw err;
      }
    }
    if (session.isNew) {
      written = await createNew(control, session.record, target);
      await control.confirmStart(written.record);
      audit.record(clientInfo(ctx), { type: 'created', record: written.record, reason: null });
    } else if (moved) {
      // Written where it now belongs, changes included.
    } else if (session.isChanged) {
      const changed = asSaved(session, now, config);
      try {
        written = await backends.update(changed, 'save', concurrencyOf(session));
      } catch (err) {
        // Grown too large for its sealed cookie: rather than refuse the change, the session
        // moves to the database (where every session has its entry) and comes back, as above,
        // once it fits again. (`changed` names the cookie also when the save followed the
        // session into one, moved there by another instance: the browser may hold that cookie.)
        if (!(err instanceof SessionTooLargeError) || changed.backend !== 'cookie') throw err;
        written = await backends.migrate(changed, 'database', 'too_large');
        tooLarge = true;
      }
    } else if (touchDue && (touched = await touchedOrUnwritten(session.record, now)) !== 'unwritten') {
      written = touched;
    } else {
      control.landed(session.record.backend);
      metrics.selected(session.record.backend, source);
      // Served from the database copy while its backend is down: point the cookie at the copy,
      // so changes made meanwhile are not hidden behind a stale copy when that backend returns.
      if (cookieBackend !== session.record.backend && session.record.id) {
        if (heldByCopy(session.record, cookieBackend)) await backends.adopt(session.record);
        setCookie(ctx, { cookieValue: backends.cookieValue(session.record.backend, session.record.id), record: session.record });
      } else if (session.record.newerThanCookie && session.record.backend === 'cookie') {
        // Served from a newer seal than the browser sent (its responses came out of order): the
        // browser is given it, sealed again as it is (a touch that moves nothing), or the change
        // it carries would be gone once this instance forgets it. Not given, the cookie stays.
        const resealed = await backends.update(session.record, 'touch').catch(() => undefined);
        if (resealed) setCookie(ctx, resealed);
      }
      return;
    }
    control.landed(written?.record.backend, written?.record);
    if (!written) {
      // Ended while this request was in flight: it stays ended. The cookie is left alone: the
      // browser may already hold the session's next id (a password change or a new login in
      // another tab answered first), and clearing it would log that out too. A change this
      // request made was not saved: 409, so that the client retries — in the new session, or
      // to find itself logged out.
      if (session.isChanged) throw new SessionConflictHttpError();
      return;
    }
    metrics.selected(written.record.backend, written.fellBackFrom ? 'fallback' : source);
    if (!session.isNew && !moved && heldByCopy(written.record, cookieBackend)) await backends.adopt(written.record);
    // Database and Redis tokens do not change on save or touch; the sealed cookie does. A change
    // to a session read from a directory entry another backend held (a cookie naming the
    // database after an instance that disagrees about the flag moved the session into a sealed
    // cookie) has just been written back here: the browser may hold that other backend's cookie
    // by now, and is given this one again, or the change would stay where its cookie no longer points.
    const heldElsewhere = session.isChanged && session.record.heldBy !== undefined;
    if (session.isNew || tooLarge || heldElsewhere || written.record.backend !== cookieBackend || written.record.backend === 'cookie') setCookie(ctx, written);
  }

  /**
   * A touch only moves the idle expiry forward, with a whole touch interval to spare. When no
   * backend can take it (a full disk under SQLite, every backend down), the request it follows is
   * still answered, as if no touch had been due; the next request tries again.
   */
  async function touchedOrUnwritten(record: SessionRecord, now: number): Promise<Written | undefined | 'unwritten'> {
    try {
      return await backends.update(asTouched(record, now, config), 'touch');
    } catch (err) {
      if (err instanceof BackendUnavailableError) return 'unwritten';
      throw err;
    }
  }

  /**
   * A new session (login, rotation) goes to `target`; one too large for it (a rotated session
   * grown in Redis, while the flag says cookie) to the database. When no backend can take it,
   * the route's `undo` runs before the 503.
   */
  async function createNew(control: SessionControl, record: SessionRecord, target: BackendName): Promise<Written> {
    try {
      try {
        return await backends.create(record, target);
      } catch (err) {
        if (!(err instanceof SessionTooLargeError) || target === 'database') throw err;
        return await backends.create(record, 'database');
      }
    } catch (err) {
      await control.abandonStart();
      throw err;
    }
  }

  /**
   * A browser sends two cookies of one name when they differ in Path or Domain (one left by an
   * older deployment, or set for the parent domain by a sibling app), and the first need not be
   * ours: rather than treat such a user as logged out for good, the next few are tried too.
   * Only when the first does not open, so the usual request parses the header once.
   */
  async function openAnother(header: string, first: string, unknown: Error | undefined): Promise<[string, SessionRecord | undefined, Error | undefined]> {
    const prefix = `${config.cookieName}=`;
    const others = header
      .split(';')
      .map((part) => part.trim())
      .filter((part) => part.startsWith(prefix))
      .map((part) => part.slice(prefix.length))
      .filter((value) => value !== first)
      .slice(0, 3);
    for (const value of others) {
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
    let raw = ctx.cookies.get(config.cookieName);
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
