/**
 * Writes the request's live session once the route has answered, and gives the browser the
 * cookie it then needs. One method per outcome — a new session is created; one the flag puts
 * elsewhere is moved there; one the route changed is saved; one due a touch is touched; any
 * other is left as it is — chosen by `write`.
 */
import type { Context } from 'koa';
import type { BackendName, Config } from '../config/config.js';
import type { Metrics, SelectionSource } from '../metrics/metrics.js';
import type { SessionAudit } from '../sessions/audit.js';
import type { SaveConcurrency, SessionBackends, Written } from '../sessions/backends.js';
import { BackendUnavailableError, SessionTooLargeError } from '../sessions/errors.js';
import { expiryAt, type Session, type SessionRecord, type Timeouts } from '../sessions/session.js';
import { clientInfo } from './client-info.js';
import { SessionConflictHttpError } from './errors.js';
import type { SessionControl } from './session-control.js';
import type { SessionCookie } from './session-cookie.js';

export interface SessionWriterDeps {
  config: Config['sessions'];
  backends: SessionBackends;
  metrics: Metrics;
  audit: SessionAudit;
}

/**
 * Each outcome is the one async function a request awaits for its write (the write route is
 * benchmarked): `write` and `stay` only choose, and return that function's promise.
 * `cookieBackend` everywhere: the backend the request's cookie pointed at.
 */
export class SessionWriter {
  private readonly config: Config['sessions'];
  private readonly backends: SessionBackends;
  private readonly metrics: Metrics;
  private readonly audit: SessionAudit;

  constructor({ config, backends, metrics, audit }: SessionWriterDeps, private readonly cookie: SessionCookie) {
    this.config = config;
    this.backends = backends;
    this.metrics = metrics;
    this.audit = audit;
  }

  write(ctx: Context, control: SessionControl, cookieBackend: BackendName | undefined): Promise<void> {
    const session = control.current;
    if (!session) return this.noSession(ctx, control);
    // While the chosen backend's breaker is open, sessions stay in (or go to) the fallback.
    const { backend: target, source } = control.destination();
    const now = Date.now();
    if (session.isNew) return this.create(ctx, control, session, target, source);
    if (target !== session.record.backend || (session.isChanged && leavesCookie(session.record, target))) return this.move(ctx, control, session, target, source, now, cookieBackend);
    return this.stay(ctx, control, session, source, now, cookieBackend);
  }

  /** A session that stays in its backend: saved if changed, else touched if due, else left as it is. */
  private stay(ctx: Context, control: SessionControl, session: Session, source: SelectionSource, now: number, cookieBackend: BackendName | undefined): Promise<void> {
    if (session.isChanged) return this.save(ctx, control, session, source, now, cookieBackend);
    if (this.touchDue(control, session, now)) return this.touch(ctx, control, session, source, now, cookieBackend);
    return this.keep(ctx, control, session, source, cookieBackend);
  }

  /** Ended, or never had one: the cookie is cleared if the route asked (a logout). */
  private async noSession(ctx: Context, control: SessionControl) {
    if (control.clearCookie) this.cookie.clear(ctx);
  }

  private async create(ctx: Context, control: SessionControl, session: Session, target: BackendName, source: SelectionSource) {
    const written = await this.createNew(control, session.record, target);
    await control.confirmStart(written.record);
    this.audit.record(clientInfo(ctx), { type: 'created', record: written.record, reason: null });
    this.noteWritten(control, session, written, source);
    this.cookie.set(ctx, written);
  }

  private async move(ctx: Context, control: SessionControl, session: Session, target: BackendName, source: SelectionSource, now: number, cookieBackend: BackendName | undefined) {
    let written: Written | undefined;
    try {
      // A changed session moves as a save would write it (a new version): a request of the same
      // session moving it at the same time then merges rather than overwrites (backends.migrate).
      // An unchanged one moves touched when a touch is due: instances that disagree about the
      // flag move it on every request, and each is the user's activity.
      const cause = source === 'fallback' ? 'fallback' : 'flag';
      const from = (record: SessionRecord) => (leavesCookie(record, target) ? heldInCookie(record) : record);
      written = session.isChanged
        ? await this.backends.migrate(from(asSaved(session, now, this.config)), target, cause, concurrencyOf(session), control.readAt)
        : await this.backends.migrate(from(this.touchDue(control, session, now) ? asTouched(session.record, now, this.config) : session.record), target, cause, undefined, control.readAt);
    } catch (err) {
      // Too large for the backend the flag chose (a sealed cookie holds ≈ 3.8 KB): nothing was
      // written, and the session stays where it is, as if the flag had not changed — a flag
      // flip never logs anybody out. It moves on a later request, once it fits.
      if (!(err instanceof SessionTooLargeError)) throw err;
      return this.stay(ctx, control, session, source, now, cookieBackend);
    }
    // Written where it now belongs, changes included.
    if (!this.noteWritten(control, session, written, source)) return;
    if (needsCookie(session, written, cookieBackend)) this.cookie.set(ctx, written);
  }

  private async save(ctx: Context, control: SessionControl, session: Session, source: SelectionSource, now: number, cookieBackend: BackendName | undefined) {
    const changed = asSaved(session, now, this.config);
    let written: Written | undefined;
    let tooLarge = false;
    try {
      written = await this.backends.update(changed, 'save', concurrencyOf(session));
    } catch (err) {
      // Grown too large for its sealed cookie: rather than refuse the change, the session
      // moves to the database (where every session has its entry) and comes back, as a move
      // does, once it fits again. (`changed` names the cookie also when the save followed the
      // session into one, moved there by another instance: the browser may hold that cookie.)
      if (!(err instanceof SessionTooLargeError) || !isSealedCookie(changed)) throw err;
      written = await this.backends.migrate(changed, 'database', 'too_large');
      tooLarge = true;
    }
    if (!this.noteWritten(control, session, written, source)) return;
    if (heldByCopy(written.record, cookieBackend)) await this.backends.adopt(written.record);
    if (tooLarge || needsCookie(session, written, cookieBackend)) this.cookie.set(ctx, written);
  }

  /**
   * A touch only moves the idle expiry forward, with a whole touch interval to spare. When no
   * backend can take it (a full disk under SQLite, every backend down), the request it follows is
   * still answered, as if no touch had been due; the next request tries again.
   */
  private async touch(ctx: Context, control: SessionControl, session: Session, source: SelectionSource, now: number, cookieBackend: BackendName | undefined) {
    let touched: Written | undefined;
    try {
      touched = await this.backends.update(asTouched(session.record, now, this.config), 'touch');
    } catch (err) {
      if (!(err instanceof BackendUnavailableError)) throw err;
      return this.keep(ctx, control, session, source, cookieBackend);
    }
    if (!this.noteWritten(control, session, touched, source)) return;
    if (heldByCopy(touched.record, cookieBackend)) await this.backends.adopt(touched.record);
    if (needsCookie(session, touched, cookieBackend)) this.cookie.set(ctx, touched);
  }

  /** Nothing to write: the cookie is corrected if it does not name what this request served. */
  private async keep(ctx: Context, control: SessionControl, session: Session, source: SelectionSource, cookieBackend: BackendName | undefined) {
    control.landed(session.record.backend);
    this.metrics.selected(session.record.backend, source);
    // Served from the database copy while its backend is down: point the cookie at the copy,
    // so changes made meanwhile are not hidden behind a stale copy when that backend returns.
    if (cookieBackend !== session.record.backend && session.record.id) {
      if (heldByCopy(session.record, cookieBackend)) await this.backends.adopt(session.record);
      this.cookie.set(ctx, { cookieValue: this.backends.cookieValue(session.record.backend, session.record.id), record: session.record });
    } else if (session.record.newerThanCookie && isSealedCookie(session.record)) {
      // Served from a newer seal than the browser sent (its responses came out of order): the
      // browser is given it, sealed again as it is (a touch that moves nothing), or the change
      // it carries would be gone once this instance forgets it. Not given, the cookie stays.
      const resealed = await this.backends.update(session.record, 'touch').catch(() => undefined);
      if (resealed) this.cookie.set(ctx, resealed);
    }
  }

  /** Activity, unless a background check: a touch is due once per SESSION_TOUCH_INTERVAL. */
  private touchDue(control: SessionControl, session: Session, now: number): boolean {
    return !control.passive && now - session.record.lastActivity >= this.config.touchIntervalMs;
  }

  /**
   * Tells `control` and the metrics where a write left the session; false if it was not
   * written because the session ended while this request was in flight.
   */
  private noteWritten(control: SessionControl, session: Session, written: Written | undefined, source: SelectionSource): written is Written {
    control.landed(written?.record.backend, written?.record);
    if (!written) {
      // Ended while this request was in flight: it stays ended. The cookie is left alone: the
      // browser may already hold the session's next id (a password change or a new login in
      // another tab answered first), and clearing it would log that out too. A change this
      // request made was not saved: 409, so that the client retries — in the new session, or
      // to find itself logged out.
      if (session.isChanged) throw new SessionConflictHttpError();
      return false;
    }
    this.metrics.selected(written.record.backend, written.fellBackFrom ? 'fallback' : source);
    return true;
  }

  /**
   * A new session (login, rotation) goes to `target`; one too large for it (a rotated session
   * grown in Redis, while the flag says cookie) to the database. When no backend can take it,
   * the route's `undo` runs before the 503.
   */
  private async createNew(control: SessionControl, record: SessionRecord, target: BackendName): Promise<Written> {
    try {
      try {
        return await this.backends.create(record, target);
      } catch (err) {
        if (!(err instanceof SessionTooLargeError) || target === 'database') throw err;
        return await this.backends.create(record, 'database');
      }
    } catch (err) {
      await control.abandonStart();
      throw err;
    }
  }
}

/**
 * Whether the browser needs `written`'s cookie after a move, save or touch. Database and Redis
 * tokens do not change on save or touch; the sealed cookie does. A change to a session read from
 * a directory entry another backend held (a cookie naming the database after an instance that
 * disagrees about the flag moved the session into a sealed cookie) has just been written back
 * here: the browser may hold that other backend's cookie by now, and is given this one again, or
 * the change would stay where its cookie no longer points.
 */
function needsCookie(session: Session, written: Written, cookieBackend: BackendName | undefined): boolean {
  const heldElsewhere = session.isChanged && session.record.heldBy !== undefined;
  return heldElsewhere || written.record.backend !== cookieBackend || isSealedCookie(written.record);
}

/**
 * Served from the directory entry of a session a sealed cookie holds (a cookie naming the
 * database, kept by the browser after another tab's request moved the session into the cookie),
 * while the flag says elsewhere: a change moves it out of the cookie, as a request with the sealed
 * cookie would move it (and so does any move: the move reads it from the cookie). Saved in the
 * database as it stood, the session went on there while the cookie store's seal stayed live: two
 * copies, each taking changes, of which the browser keeps one — and a change sealed since the
 * entry was written (MIRROR_FLUSH_MS) was left behind. Moved, the seal is marked moved out
 * (CookieStore.evict: a save over it follows the session), and what was sealed since is carried
 * over (SessionBackends.carryOver). A read, or a touch (the entry's expiry only: it stays the
 * cookie's), changes nothing of the session, which stays in the cookie the browser may hold.
 */
function leavesCookie(record: SessionRecord, target: BackendName): boolean {
  return record.heldBy === 'cookie' && target !== 'cookie';
}

/** `record`, served from its directory entry, as the sealed cookie that holds it: where a move takes it from. */
function heldInCookie(record: SessionRecord): SessionRecord {
  const { heldBy: _heldBy, ...held } = record;
  return { ...held, backend: 'cookie' };
}

/** The session is its cookie (sealed): the cookie's value changes with every write of it. */
function isSealedCookie(record: SessionRecord): boolean {
  return record.backend === 'cookie';
}

/**
 * Served (and maybe saved or touched) from the database copy of a session whose cookie names
 * another backend, which is down: the copy now holds it, and the directory should say so.
 */
function heldByCopy(record: SessionRecord, cookieBackend: BackendName | undefined): boolean {
  return record.backend === 'database' && cookieBackend !== undefined && cookieBackend !== 'database';
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
