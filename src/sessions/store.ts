/**
 * The one seam between sessions and where they are kept. Implementations know nothing of
 * HTTP: `cookie-store.ts`, `database-store.ts`, `redis-store.ts`, the compositions
 * `mirrored-store.ts` (a store plus a durable database copy) and `guarded-store.ts`
 * (deadline, circuit breaker, metrics), and `disabled-store.ts` (a backend switched off).
 *
 * A *token* is what the cookie carries for a session: the session id for server-side stores,
 * the sealed session itself for the cookie store.
 */
import type { BackendName } from '../config/config.js';
import type { SessionRecord } from './session.js';

export interface SessionStore {
  readonly backend: BackendName;

  /**
   * The session the token names, or `undefined` for a miss: unknown, malformed, tampered
   * with, or expired. Throws only when the backend itself fails.
   */
  load(token: string): Promise<SessionRecord | undefined>;

  /** Stores a new session (or one migrating in) and returns its token. */
  create(record: SessionRecord): Promise<string>;

  /**
   * Stores a session moving in from another backend, where it was read at `readVersion`; the
   * record carries the next version. Returns undefined, writing nothing, when the session has
   * changed since it was read (saved or moved by another request): the mover reads it again.
   * Where a store has nothing to compare against, a move is a create.
   */
  moveIn(record: SessionRecord, readVersion: number): Promise<string | undefined>;

  /**
   * Overwrites an existing session and returns its token, or `undefined` when the session no
   * longer exists here (logged out or revoked meanwhile): a save never brings a session back.
   * With `expectedVersion`, throws `SessionConflictError` if the stored version differs
   * (optimistic concurrency; the cookie store cannot know and ignores it).
   */
  save(record: SessionRecord, expectedVersion?: number): Promise<string | undefined>;

  /**
   * Records activity (`lastActivity`, `expiresAt`) without rewriting the data where the
   * backend allows it. Same return contract as `save`.
   */
  touch(record: SessionRecord): Promise<string | undefined>;

  /** Ends the session here. Idempotent. */
  destroy(record: SessionRecord): Promise<void>;

  /**
   * Drops this backend's copy after the session moved elsewhere: only the copy at
   * `record.version`, the one that was moved. Unlike `destroy`, it leaves a copy saved or moved
   * back here since, and one that now belongs to the destination (see DatabaseStore). A store
   * that can tell says whether this call removed it (Redis: SessionBackends.takeLeftBehind).
   * `unlessSealedPast`, the cookie's for a refused move (CookieStore.evict): false, nothing
   * marked, where a seal past that version was made here.
   */
  evict(record: SessionRecord, unlessSealedPast?: number): Promise<boolean | void>;

  /** Throws when the backend cannot serve. */
  ping(): Promise<void>;

  /**
   * Throws when the backend answers but takes no writes (a full disk, a read-only standby),
   * where `ping` alone would not tell. Checked apart from `ping`: reads go on being served, so
   * this does not count against the backend's breaker.
   */
  writable?(): Promise<void>;

  /**
   * Whether `err` is the backend refusing a write it answered (no room, read-only) rather than
   * failing to answer. Such errors fail their request but not the backend's breaker.
   */
  refusesWrite?(err: unknown): boolean;

  close(): Promise<void>;
}

/** The optional ability to find a user's sessions (not every store can: a cookie cannot). */
export interface SessionIndex {
  /** The user's live sessions, oldest first. Cost is O(that user's sessions). */
  listByUser(userId: number): Promise<SessionRecord[]>;
}

export type IndexedSessionStore = SessionStore & SessionIndex;

export function isIndexed(store: SessionStore): store is IndexedSessionStore {
  return typeof (store as Partial<SessionIndex>).listByUser === 'function';
}

/**
 * The optional ability of a store spread over servers that fail apart (a Redis Cluster's
 * masters): which one serves a session. The guard judges each one's silence on its own.
 */
export interface Partitioned {
  /** A name for the server that holds the session of `idHash` now; undefined when not known. */
  partitionOf(idHash: string): string | undefined;
}

export function isPartitioned(store: SessionStore): store is SessionStore & Partitioned {
  return typeof (store as Partial<Partitioned>).partitionOf === 'function';
}
