/**
 * What a route may do with the request's session (`ctx.state.sessions`): read it, start one at
 * login, rotate its id, end it or others. Nothing is written here: the session middleware
 * applies it all once the route has answered (session-middleware.ts).
 */
import type { Context } from 'koa';
import type { BackendName, Config } from '../config/config.js';
import type { BackendFlag, Choice } from '../flags/backend-flag.js';
import type { RevocationReason } from '../metrics/metrics.js';
import { SessionBackends } from '../sessions/backends.js';
import { describeSession, expiryAt, hashSessionId, newHandle, newSessionId, Session, type SessionRecord } from '../sessions/session.js';
import { clientInfo } from './client-info.js';

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
  readonly ending: Ending[] = [];
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
    const backend = this.placement.backends.placement(choice.backend, session.record.idHash);
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
    if (this.current && !this.current.isNew) this.ending.push({ kind: 'replaced', record: this.current.record });
    const now = Date.now();
    const issuedAt = Math.min(hooks?.accountReadAt ?? now, now);
    const id = newSessionId();
    // From issuedAt: a revocation that ends it is kept until issuedAt + the absolute timeout (revocations.ts).
    const absoluteExpiresAt = issuedAt + this.timeouts.absoluteTimeoutMs;
    const record: SessionRecord = {
      id,
      idHash: hashSessionId(id),
      handle: newHandle(),
      userId: user.id,
      // A placeholder: where a new session goes is chosen when it is written (`destination`).
      backend: 'database',
      data: { csrfToken: newHandle(), user: { id: user.id, email: user.email, name: user.name, role: user.role }, platformId: null },
      createdAt: now,
      issuedAt,
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
      this.ending.push({ kind: 'replaced', record: old.record });
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
    this.ending.push({ kind: 'ended by system', record, reason });
  }

  /** Throws `unknown`, if the session the cookie names could not be read. */
  mustKnow(): void {
    if (this.unknown) throw this.unknown;
  }

  /** Logs out: the session ends in its backend and the cookie is cleared. */
  end(reason: RevocationReason = 'logout') {
    // A logout of a session that cannot be read now could not be recorded: it did not happen (503).
    if (!this.current) this.mustKnow();
    if (this.current && !this.current.isNew) this.ending.push({ kind: 'ended by user', record: this.current.record, reason });
    this.current = undefined;
    this.clearCookie = true;
  }
}

/** A session this request ends once the route has answered, and why: what the metrics and the audit say of it. */
export type Ending =
  /** The user's request ended it (`end`: a logout, or the user's own revocation): a revocation with its reason. */
  | { kind: 'ended by user'; record: SessionRecord; reason: RevocationReason }
  /**
   * Replaced by this request's new session (`start`, `rotate`): no revocation. The audit tells
   * which by the handle: a rotation's old id has the new id's, a login's predecessor another.
   */
  | { kind: 'replaced'; record: SessionRecord }
  /** The service ended it for the user (`endOther`: the oldest beyond SESSION_MAX_PER_USER): a revocation. */
  | { kind: 'ended by system'; record: SessionRecord; reason: RevocationReason }
  /** A rotation's old id, ended although no new id was stored: the client had gone (session-endings.ts). */
  | { kind: 'client gone'; record: SessionRecord };

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
  /**
   * The instant the login last read the account (ms; User.reread, after the password check),
   * the session's `issuedAt`: a password, role or active change saved after that read revokes
   * every session issued before it saved, so it ends this one too, though the login stores it
   * later. Default: now.
   */
  accountReadAt?: number;
}

declare module 'koa' {
  interface DefaultState {
    sessions: SessionControl;
  }
}
