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
import type { BackendFlag, Choice } from '../flags/backend-flag.js';
import type { Metrics, RevocationReason } from '../metrics/metrics.js';
import { SessionBackends, type SaveConcurrency, type Written } from '../sessions/backends.js';
import { BackendUnavailableError, SessionTooLargeError } from '../sessions/errors.js';
import { clientInfo } from './client-info.js';
import { SessionConflictHttpError } from './errors.js';
import { describeSession, expiryAt, hashSessionId, newHandle, newSessionId, Session, type SessionData, type SessionRecord, type Timeouts } from '../sessions/session.js';
import type { AuditEntry, SessionAudit } from '../sessions/audit.js';

export interface SessionUser {
  id: number;
  email: string;
  name: string;
  role: string;
}

/** What routes may do with the request's session; applied when the route has answered. */
export class SessionControl {
  current: Session | undefined;
  /**
   * Why the session the cookie names could not be read (its backend, or the database copy that
   * was all Redis had left, is down): neither known nor known to be gone. The request goes on
   * without a session — a login page, an asset, /healthz are served — but whatever would answer
   * "not logged in" answers this 503 instead (`mustKnow`): a 401 would log the user out.
   */
  unknown: Error | undefined;
  /** Sessions to end after the route, with why (the replaced one at login, the old id at rotation). */
  readonly ending: Array<{ record: SessionRecord; reason?: RevocationReason; quiet?: boolean; bySystem?: boolean }> = [];
  clearCookie = false;
  /** A background check, not user activity: it does not extend the idle expiry. */
  passive = false;
  /** When the session was read (just before this was made): a move of it judges by this (backends.migrate). */
  readonly readAt = Date.now();
  /** What the route asked to happen once the new session is stored, or could not be (see `start`). */
  private started: StartHooks | undefined;

  /** The stored session a rotation replaced (see `rotate`): commit catches up with saves made to it meanwhile. */
  rotatedFrom: Session | undefined;

  /** Where commit left the current session (undefined until then). */
  private landedIn: BackendName | undefined;
  private shown: SessionDescription[] | undefined;

  /** The flag's answer for the current handle, asked once per request (see `destination`). */
  private choice: { handle: string; choice: Choice } | undefined;

  constructor(
    loaded: SessionRecord | undefined,
    private readonly ctx: Context,
    private readonly timeouts: Pick<Config['sessions'], 'idleTimeoutMs' | 'absoluteTimeoutMs'>,
    private readonly placement: { flag: BackendFlag; backends: SessionBackends },
  ) {
    this.current = loaded ? new Session(loaded) : undefined;
  }

  /**
   * Where the current session goes when this request is done: the backend the flag chooses,
   * or the fallback while that backend's breaker is open (`source: 'fallback'`). A new session
   * is written, and one the flag now puts elsewhere is moved, after the route has answered,
   * so routes report this rather than the record's `backend`. Asked of the flag once per request.
   */
  destination(): Choice {
    const session = this.current;
    if (!session) throw new Error('destination() needs a session');
    if (this.choice?.handle !== session.handle) this.choice = { handle: session.handle, choice: this.placement.flag.choose(session.handle) };
    const { choice } = this.choice;
    const backend = this.placement.backends.placement(choice.backend);
    return backend === choice.backend ? choice : { backend, source: 'fallback' };
  }

  /**
   * `description` (of the current session, for a JSON body) with `backend` where the session
   * will be. The route answers before the session is written, and a write may land elsewhere
   * than the flag said (its backend failed and the fallback took it): commit then corrects the
   * descriptions handed out here, before Koa serialises the body — and their times, when the
   * write was a touch or a save that moved the idle expiry. (A plain property rather than a
   * getter: the read route's hot path keeps one object shape.)
   */
  withBackend<T extends SessionDescription>(description: T): T {
    description.backend = this.landedIn ?? this.destination().backend;
    (this.shown ??= []).push(description);
    return description;
  }

  /** Where commit left the current session (`written`: as it wrote it); corrects what `withBackend` said. */
  landed(backend: BackendName | undefined, written?: SessionRecord) {
    this.landedIn = backend;
    if (backend === undefined || !this.shown) return;
    const times = written && describeSession(written);
    for (const description of this.shown) {
      description.backend = backend;
      if (times && description.expiresAt !== undefined) {
        description.lastActivity = times.lastActivity;
        description.expiresAt = times.expiresAt;
      }
    }
  }

  /**
   * Logs `user` in under a brand-new session id and handle; any session this request had ends.
   * The session is stored after the route has answered; `hooks.stored` runs once it is (a
   * login counts as a success only then), `hooks.undo` if it cannot be (no backend can serve:
   * 503): a signup takes its new account back, so that the client's retry is not refused as
   * `email_taken`.
   */
  start(user: SessionUser, hooks?: StartHooks): Session {
    this.started = hooks;
    if (this.current && !this.current.isNew) this.ending.push({ record: this.current.record, quiet: true });
    const now = Date.now();
    const id = newSessionId();
    const absoluteExpiresAt = now + this.timeouts.absoluteTimeoutMs;
    const record: SessionRecord = {
      id,
      idHash: hashSessionId(id),
      handle: newHandle(),
      userId: user.id,
      // A placeholder: where a new session goes is chosen when it is written (`destination`).
      backend: 'database',
      data: { csrfToken: newHandle(), user: { id: user.id, email: user.email, name: user.name, role: user.role }, platformId: null },
      createdAt: now,
      issuedAt: now,
      lastActivity: now,
      absoluteExpiresAt,
      expiresAt: Math.min(now + this.timeouts.idleTimeoutMs, absoluteExpiresAt),
      ...clientInfo(this.ctx),
      version: 1,
    };
    this.current = new Session(record, true);
    return this.current;
  }

  /**
   * The same login goes on under a new id (privilege or password change): same handle, data
   * and absolute expiry; the old id stops working. `issuedAt` is the new epoch for revocation checks.
   */
  rotate(issuedAt = Date.now()): Session {
    const old = this.current;
    if (!old) throw new Error('rotate() needs a session');
    if (!old.isNew) {
      this.ending.push({ record: old.record, quiet: true });
      this.rotatedFrom = old;
    }
    const id = newSessionId();
    // The Redis and cookie formats do not carry IP and User-Agent (the directory does): the
    // new id is this browser's, so it takes this request's.
    const record = { ...old.record, id, idHash: hashSessionId(id), issuedAt, lastActivity: issuedAt, version: old.record.version + 1, ...clientInfo(this.ctx) };
    this.current = new Session({ ...record, expiresAt: expiryAt(record, this.timeouts) }, true);
    return this.current;
  }

  /**
   * The new session could not be stored: runs the undo `start` was given, once. Its own
   * failure is swallowed: the client is answered with the failure that stopped the session.
   */
  async abandonStart(): Promise<void> {
    const undo = this.started?.undo;
    this.started = undefined;
    await undo?.().catch(() => undefined);
  }

  /** The new session is stored (as `record`): runs what `start` was told to run then, once. */
  async confirmStart(record: SessionRecord): Promise<void> {
    const stored = this.started?.stored;
    this.started = undefined;
    await stored?.(record);
  }

  /**
   * Another session of the user ends once this request's new session is stored (the oldest,
   * to keep SESSION_MAX_PER_USER): a login that fails (503) ends nothing.
   */
  endOther(record: SessionRecord, reason: RevocationReason) {
    this.ending.push({ record, reason, bySystem: true });
  }

  /** Throws `unknown`, if the session the cookie names could not be read. */
  mustKnow(): void {
    if (this.unknown) throw this.unknown;
  }

  /** Logs out: the session ends in its backend and the cookie is cleared. */
  end(reason: RevocationReason = 'logout') {
    // A logout of a session that cannot be read now could not be recorded: it did not happen (503).
    if (!this.current) this.mustKnow();
    if (this.current && !this.current.isNew) this.ending.push({ record: this.current.record, reason });
    this.current = undefined;
    this.clearCookie = true;
  }
}

/** What a JSON body says of the current session, as far as commit may correct it. */
interface SessionDescription {
  backend: BackendName;
  lastActivity?: string;
  expiresAt?: string;
}

export interface StartHooks {
  /** Runs once the new session is stored; may end other sessions (`endOther`). */
  stored?: (record: SessionRecord) => void | Promise<void>;
  /** Runs if it cannot be stored (503), to take back what the route did. */
  undo?: () => Promise<unknown>;
}

declare module 'koa' {
  interface DefaultState {
    sessions: SessionControl;
  }
}

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
    for (const { record, reason, quiet, bySystem } of control.ending) {
      if ((record.handle === handle) !== (which === 'same handle') || seen.has(record.idHash)) continue;
      seen.add(record.idHash);
      await backends.end(record);
      if (reason) metrics.revocations.inc({ reason });
      audit.record(clientInfo(ctx), bySystem ? { type: 'revoked', record, reason: reason ?? null, actor: 'system' } : endedByUser(record, handle, reason, quiet));
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
  async function catchUpRotation(control: SessionControl) {
    const { rotatedFrom: old, current } = control;
    if (!old || !current?.isNew || !old.record.id) return;
    const latest = await backends.latest(old.record).catch(() => null);
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
      await catchUpRotation(control);
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
    } else if (touchDue) {
      written = await backends.update(asTouched(session.record, now, config), 'touch');
    } else {
      control.landed(session.record.backend);
      metrics.selected(session.record.backend, source);
      // Served from the database copy while its backend is down: point the cookie at the copy,
      // so changes made meanwhile are not hidden behind a stale copy when that backend returns.
      if (cookieBackend !== session.record.backend && session.record.id) {
        if (heldByCopy(session.record, cookieBackend)) await backends.adopt(session.record);
        setCookie(ctx, { cookieValue: backends.cookieValue(session.record.backend, session.record.id), record: session.record });
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
