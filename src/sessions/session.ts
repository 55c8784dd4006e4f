/**
 * What a session is, independent of where it is kept. Stores persist `SessionRecord`s;
 * the HTTP layer works with `Session`, which adds change detection on top of a record.
 */
import { hash, randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { BackendName } from '../config/config.js';

/** The application data a session carries. Anything JSON-serialisable may be added. */
export interface SessionData {
  csrfToken: string;
  user: { id: number; email: string; name: string; role: string };
  platformId?: number | null;
  [key: string]: unknown;
}

export interface SessionRecord {
  /**
   * The secret id. Server-side stores keep only its hash, so it is '' on records read from a
   * listing; the cookie backend carries it inside the seal.
   */
  id: string;
  /** hash(id): the key server-side stores use, so a leaked table or keyspace yields no usable cookie. */
  idHash: string;
  /** Public, stable for the life of a login (survives id rotation and migration). */
  handle: string;
  userId: number;
  backend: BackendName;
  data: SessionData;
  /** Login time, in ms: the absolute timeout counts from here and is never extended. */
  createdAt: number;
  /** When this id was issued (login, rotation): compared with revocation epochs. */
  issuedAt: number;
  lastActivity: number;
  /** min(lastActivity + idle timeout, createdAt + absolute timeout). */
  expiresAt: number;
  absoluteExpiresAt: number;
  ip: string;
  userAgent: string;
  /** Bumped on every data write; lets stores refuse a stale overwrite. */
  version: number;
  /**
   * Set on a session read from the database directory while another backend holds it (a cookie
   * that missed a move, a fallback read): that backend's copy is the session (backends.open).
   */
  heldBy?: BackendName;
  /**
   * Set on a cookie session served from a seal newer than the request's cookie, which this
   * instance made for another request of the session (CookieStore.load): the browser is to be
   * given it again. Set only then, so that the usual record keeps one shape.
   */
  newerThanCookie?: true;
  /**
   * Set on a cookie session whose seal is older than a move out of the cookie made here since
   * (CookieStore.load): the session is where that move put it, and the seal lacks every change
   * since (backends.open serves it from there). Set only then, as `newerThanCookie`.
   */
  movedOut?: true;
}

/** Who asked for a session or an audited change, as the request tells (http/client-info.ts). */
export type ClientInfo = Pick<SessionRecord, 'ip' | 'userAgent'>;

/** 256 bits from the CSPRNG, base64url. */
export function newSessionId(): string {
  return randomBytes(32).toString('base64url');
}

/** 128 bits: public handles and CSRF tokens. */
export function newHandle(): string {
  return randomBytes(16).toString('base64url');
}

/** Server-side stores key sessions by this, so a leaked table or keyspace yields no usable cookie. */
// crypto.hash is the one-shot form: a third of createHash's cost for a short input, on every request.
export function hashSessionId(id: string): string {
  return hash('sha256', id, 'base64url');
}

export interface Timeouts {
  idleTimeoutMs: number;
  absoluteTimeoutMs: number;
}

export function expiryAt(record: Pick<SessionRecord, 'lastActivity' | 'absoluteExpiresAt'>, t: Timeouts): number {
  return Math.min(record.lastActivity + t.idleTimeoutMs, record.absoluteExpiresAt);
}

/**
 * The request's view of a session: the record plus whether the app changed it. Assigning
 * through `set` marks it changed; reading never does, so an unchanged session is not rewritten.
 */
export class Session {
  private readonly changedKeys = new Set<string>();
  /** The merge patch of each key changed by `patch` (and not since replaced by `set`). */
  private patchOf: Map<string, Readonly<Record<string, unknown>>> | undefined;

  constructor(
    public record: SessionRecord,
    public readonly isNew = false,
  ) {}

  get handle() {
    return this.record.handle;
  }
  get data(): Readonly<SessionData> {
    return this.record.data;
  }
  get isChanged() {
    return this.changedKeys.size > 0 || this.isNew;
  }
  /** The data keys this request changed: what a save merges onto a concurrent save. */
  get changes(): ReadonlySet<string> {
    return this.changedKeys;
  }
  set<K extends keyof SessionData>(key: K, value: SessionData[K]) {
    if (JSON.stringify(this.record.data[key]) === JSON.stringify(value)) return;
    this.record = { ...this.record, data: { ...this.record.data, [key]: value } };
    this.changedKeys.add(key as string);
    this.patchOf?.delete(key as string);
  }

  /**
   * Merges `patch` into the object at `key` (a JSON merge patch, one level deep: null removes
   * an entry). Unlike `set`, what a concurrent save merges onto is the patch, not the whole
   * object: two tabs that set different preferences at the same time both keep theirs.
   */
  patch(key: string, patch: Readonly<Record<string, unknown>>) {
    const before = this.patchOf?.get(key);
    this.set(key, applyMergePatch(this.record.data[key], patch));
    if (this.changedKeys.has(key)) (this.patchOf ??= new Map()).set(key, { ...before, ...patch });
  }

  /** The keys changed by `patch` (not since replaced by `set`), with the patch each had. */
  get patches(): ReadonlyMap<string, Readonly<Record<string, unknown>>> | undefined {
    return this.patchOf;
  }
}

/** `patch` applied to `base` (an object, or nothing yet): JSON merge patch (RFC 7396), one level deep. */
export function applyMergePatch(base: unknown, patch: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...(base !== null && typeof base === 'object' ? (base as Record<string, unknown>) : {}) };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else merged[key] = value;
  }
  return merged;
}

/** The one-level merge patch that `applyMergePatch` turns `from` into `to` with: keys changed or added, removed ones as null. */
export function mergePatchBetween(from: Readonly<Record<string, unknown>>, to: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const key of Object.keys(from)) if (!(key in to)) patch[key] = null;
  for (const [key, value] of Object.entries(to)) if (!isDeepStrictEqual(from[key], value)) patch[key] = value;
  return patch;
}

/**
 * How far a move out of Redis advances the version: past every version the copy it leaves in
 * Redis can still reach. That copy can outlive the move and take saves (SessionBackends.move,
 * `takeLeftBehind`) while the moved session takes others: with +1 both went on from the same
 * version, and version N in Redis and version N in the database held different changes, so that
 * a comparison of versions took the copy left behind for the session and dropped changes answered
 * 200 in the database. A step keeps each branch's versions apart (the one left behind stays below
 * the moved one unless it takes this many saves itself) with no new stored field: a release that
 * does not know it reads, compares and increments these versions as it always has. Versions are
 * uint32 in Redis and INTEGER in the sessions table (2^31 − 1): two million moves of one session.
 *
 * A move out of the cookie steps as far, for the same reason: the cookie seals its saves on, from
 * the version the move read, until the move marks it moved out (CookieStore.evict), and a later
 * request can bring one of those seals and move it too. Sealed at the version that move wrote, it
 * passed the directory and Redis (each refuses only a mover that read an older version than it
 * holds), and its copy replaced the first move's, whose change had been answered 200. Out of the
 * database no step is needed: its row is the directory entry, and a save there after a move read
 * it makes the move's write refused.
 */
export const MOVE_OUT_STEP = 1024;

/** The highest version the sessions table holds (PostgreSQL INTEGER); Redis's uint32 holds more. */
export const MAX_SESSION_VERSION = 2 ** 31 - 1;

/**
 * The version a move of `from`'s copy read at `readVersion` writes: a step on out of Redis or the
 * cookie (MOVE_OUT_STEP), the next one out of the database. Within a step of
 * MAX_SESSION_VERSION, the next one (as before the step): stepped past it, the move failed on
 * every request (503, the database's `out of range` counted as its failure, so its breaker
 * opened for every session).
 */
export function movedVersion(from: BackendName, readVersion: number): number {
  const step = from === 'database' ? 1 : MOVE_OUT_STEP;
  return readVersion + (readVersion + step <= MAX_SESSION_VERSION ? step : 1);
}

/** The public view of a session, as the API shows it. */
export function describeSession(r: SessionRecord) {
  return {
    handle: r.handle,
    backend: r.backend,
    createdAt: isoTime(r.createdAt),
    lastActivity: isoTime(r.lastActivity),
    expiresAt: isoTime(r.expiresAt),
  };
}

// A session's times stay the same on every request until its next touch, and formatting one
// (Date#toISOString) costs about a microsecond: three of them were 4 % of a Redis read.
const isoTexts = new Map<number, string>();
const ISO_TEXTS = 10_000;

function isoTime(ms: number): string {
  let text = isoTexts.get(ms);
  if (text === undefined) {
    if (isoTexts.size >= ISO_TEXTS) isoTexts.clear();
    text = new Date(ms).toISOString();
    isoTexts.set(ms, text);
  }
  return text;
}
