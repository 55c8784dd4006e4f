/**
 * The three backends as the application uses them, and the only code on the request path that
 * knows how a session moves between them: which store a cookie points at, falling back when a
 * backend cannot serve, migrating a session to the backend the flag chose, and ending sessions.
 * (The operator's bulk move, without traffic, is bulk-migrate.ts.)
 *
 *   cookie   → Mirrored(Guarded(CookieStore), DatabaseStore)
 *   database → Guarded(DatabaseStore)
 *   redis    → Mirrored(Guarded(RedisStore), DatabaseStore)
 *
 * The cookie names the backend that holds the session: `<c|d|r>.<token>` (session-cookie-value.ts).
 *
 * Why some branches name Redis: it is the one backend whose copy of a session can outlive a move
 * out of it. Its write is not ordered with the directory's (a save can land in Redis after a move
 * read the session, or while Redis was unreachable to the eviction), and a miss there reads
 * through to the database copy. So a move, or a cookie pointing at the database, asks whether
 * Redis holds a newer copy (`redisCopy`, `current`). A sealed cookie comes with the request
 * itself, and a database session's row is its directory entry: neither has a copy elsewhere to ask.
 */
import { isDeepStrictEqual } from 'node:util';
import { BACKENDS, type BackendName } from '../config/config.js';
import { isDatabaseOutageError, withinDeadline } from '../db/database.js';
import type { StoreOperation } from '../metrics/metrics.js';
import type { DatabaseStore } from './database-store.js';
import { isDisabled } from './disabled-store.js';
import { BackendUnavailableError, SessionConflictError, type FailureReason } from './errors.js';
import type { SessionIndex, SessionStore } from './store.js';
import type { RevocationList } from './revocations.js';
import { applyMergePatch, hashSessionId, mergePatchBetween, movedVersion, type SessionRecord } from './session.js';
import { SessionCookieValue } from './session-cookie-value.js';

/** How long a move is remembered for requests that read the session before it (see `migrate`). */
const MOVE_MEMORY_MS = 10_000;
/**
 * How often a move refused by the directory entry (the session changed since it was read) reads
 * it again and retries, as a save merging over concurrent saves does (saveMerging: 20). With
 * three, a move into the cookie, where the session's other tabs keep saving in the database at
 * every retry's read, gave up under five writers a session: 409 session_conflict for a change a
 * save in place would have merged.
 */
const MOVE_TRIES = 21;
/**
 * How many times a save follows its session to where a move put it (`saveMerging`). Once was not
 * enough under fast flips: the session moved on again (into a sealed cookie) while the save was
 * on its way, and the save, written where it had followed it — a directory entry the cookie now
 * held — continued the session beside the live seal. Each follow is a move made since.
 */
const SAVE_FOLLOWS = 3;
/** How long a read waits for a take of a copy left in Redis under way (see `openedAfterTake`). */
const TAKE_WAIT_MS = 1_000;
/**
 * How long a move waits for an earlier move of the same session under way on this instance (see
 * `migrate`, `leftInRedisTaken`). The earlier one may be held by the directory (its take, a refused move's
 * read of where the session went), which a stalled database holds up to the database backend's
 * deadline, and its other steps (writes through the bare directory) up to pg's query_timeout.
 */
const MOVE_WAIT_MS = 1_000;
/** How long ending a session waits for its stored copies to be removed (see `end`). */
const REMOVAL_WAIT_MS = 2_000;

export interface BackendEvents {
  fallback(from: BackendName, to: BackendName, reason: FailureReason): void;
  /**
   * `cause`: the flag chose `to`; or `to` is the fallback while the chosen backend is down; or
   * the session grew too large for its sealed cookie and `to` is the database.
   */
  migrated(from: BackendName, to: BackendName, cause: MigrationCause): void;
  /** A secondary write (eviction, cleanup) failed; the request still succeeded. */
  secondaryFailure(err: unknown, what: string): void;
}

export type MigrationCause = 'flag' | 'fallback' | 'too_large';

/**
 * What a probe of a backend found. `read_only`: it answers and serves reads, and takes no writes
 * (a full disk, a standby); `disabled`: switched off by configuration (REDIS_URL=none).
 */
export type BackendHealth = 'up' | 'down' | 'read_only' | 'disabled';

/** What a save needs to merge with a concurrent one: the version the request read, and what it changed. */
export interface SaveConcurrency {
  readVersion: number;
  changedKeys: ReadonlySet<string>;
  /** Changed keys whose change was a merge patch (Session#patch): re-applied, not overwritten. */
  patches?: ReadonlyMap<string, Readonly<Record<string, unknown>>>;
  /**
   * Changes of other requests, carried over (`carryOver`), not this request's own: put back on a
   * session that changed again only where it still holds what they were carried over onto
   * (`data`; for a patch, field by field). A request that read them has answered since, and may
   * have changed the same key again.
   */
  carried?: { over: Readonly<Record<string, unknown>>; values: Readonly<Record<string, unknown>> };
}

/** A backend as served: a store that knows whether its breaker lets calls through. */
export type ServingStore = SessionStore & {
  readonly available: boolean;
  /** `available` for one session, where the store's servers fail apart (GuardedStore.availableFor). */
  availableFor?(idHash: string): boolean;
  /** The session in the store itself, never its database copy (MirroredStore.loadHeld). */
  loadHeld?(token: string): Promise<SessionRecord | undefined>;
  /** Writes what the store writes behind (a mirrored store's database copy). */
  flush?(): Promise<void>;
  /** Writes one session's copy if it is still behind (MirroredStore.copyWritten): true if it was. */
  copyWritten?(idHash: string): Promise<boolean>;
  /** This instance's copy of a session not yet in the database (MirroredStore.unwritten). */
  unwritten?(idHash: string): SessionRecord | undefined;
  /** A user's sessions whose database copy this instance has not written yet (MirroredStore). */
  unwrittenOf?(userId: number): SessionRecord[];
  /** `moveIn` without writing the directory entry first: unordered (MirroredStore). */
  moveInUnordered?(record: SessionRecord, readVersion: number): Promise<string | undefined>;
};

export interface Written {
  cookieValue: string;
  record: SessionRecord;
  /** Set when the chosen backend could not take the session and the fallback did. */
  fellBackFrom?: BackendName;
  /**
   * Why it could not (`fellBackFrom`): a write that timed out may have landed all the same. Unset
   * when the target was never sent the write (its directory entry's write was not answered).
   */
  fallbackReason?: FailureReason;
  /**
   * For a take of a Redis write that failed over (`takeLandedLater`): the data that write sent to
   * Redis, which a copy left there was made from — what saves left on it is carried over against
   * it, not against `record` (the fallback's write, merged onto changes Redis never had).
   */
  carriedFrom?: SessionRecord['data'];
  /**
   * For a move out of Redis: the data it moved (read there, with the request's changes), of which
   * a copy saves left there was made — not `record`'s when the move wrote another copy's data (the
   * target's own newer seal that refused it: `moveTried`). Carried over against `record`, that
   * seal's changes read as changes the copy left had undone, and the take wrote them away
   * (test/switching/take-after-refused-move-into-cookie.test.ts).
   */
  movedFrom?: SessionRecord['data'];
}

/** The database backend's deadline, for a call on its table made outside it (GuardedStore.bounded). */
export interface DirectoryDeadline {
  bounded<T>(work: Promise<T>, operation?: StoreOperation): Promise<T>;
}

/**
 * On a record served from its database copy after its Redis read failed (`opened`): the record
 * as read, for the take of the Redis copy that the request's write schedules once it has written
 * (`takeAfterFailedRead`). A symbol: the spreads of the request's record (a change, a save's new
 * version) keep it, and no store writes it. Taken off before the record goes further than the
 * write that reads it (`unmarked`).
 */
const FAILED_READ = Symbol('served after its redis read failed');
type FailedReadRecord = SessionRecord & { [FAILED_READ]?: SessionRecord };

/** `record` without the mark of a failed Redis read. */
function unmarked(record: FailedReadRecord): SessionRecord {
  const { [FAILED_READ]: _read, ...rest } = record;
  return rest;
}

/**
 * A seal made since a move out of the cookie read the session, found when a refused try marked the
 * cookie moved out (`moveTried`): `meanwhile`, and `over`, the data that try had read, which the
 * seal's changes are taken against (`move`).
 */
interface MovedOutMeanwhile {
  meanwhile?: SessionRecord;
  over?: SessionRecord['data'];
}

/** A move of one session, remembered for the requests that read it before the move was done (`migrate`). */
interface MoveMemory {
  from: BackendName;
  to: BackendName;
  readVersion: number;
  at: number;
  done: Promise<Written | undefined>;
  settledAt?: number;
}

export class SessionBackends {
  /** The latest move of each session on this instance, kept for MOVE_MEMORY_MS (see `migrate`). */
  private readonly moves = new Map<string, MoveMemory>();
  /**
   * Moves out of Redis under way, by session, until each has settled: a move into Redis waits for
   * them (`leftInRedisTaken`). Kept apart from `moves`, where a later move of the session replaces one: the
   * move into Redis that waited for it past MOVE_WAIT_MS, and then every later one, found only
   * that move there, and went on.
   */
  private readonly movesOutOfRedis = new Map<string, Set<MoveMemory>>();
  /**
   * Moves out of the cookie under way, by session, until each has settled: a read of a seal one
   * of them carries over waits for it (`whereMovedOut`). Kept apart from `moves` for the same
   * reason: a later move out of the cookie, by a request that had read that seal before the first
   * move marked it moved out, replaced the first there; the read found a move that carries
   * nothing of the seal over (it read it), waited for none, and was served the moved copy
   * without the seal's change.
   */
  private readonly movesOutOfCookie = new Map<string, Set<MoveMemory>>();
  /** Saves failing over to the database now, by session: the next waits for the last (`saveOnFallback`). */
  private readonly fallbackSaves = new Map<string, Promise<Written | undefined>>();
  /**
   * Takes of a copy left in Redis under way, by session, a retry of an `untaken` one included:
   * settled once its saves are on top of the moved copy, or once it failed (`open`).
   */
  private readonly takes = new Map<string, Promise<void>>();
  /**
   * Takes of a copy left in Redis that the database failed (its directory read, or the carry-over
   * onto the moved copy), or Redis (its eviction, or the read of whether saves left a copy: not
   * answered in time is not gone), by session: tried again by the session's next open on this instance.
   * Left, that copy sat below the moved copy's version (MOVE_OUT_STEP): the next request
   * read it, moved it, was refused by the directory entry, and went on from the moved copy, its
   * saves (answered 200) gone for good. Forgotten when the session ends here (`end`: it is never
   * opened again) or has passed its absolute expiry (`forgetExpiredUntaken`).
   */
  private readonly untaken = new Map<string, { retry: () => Promise<unknown>; until: number }>();

  constructor(
    /** The database backend lists every session (its table is the directory), and puts its deadline on the directory's reads. */
    readonly stores: Record<BackendName, ServingStore> & { database: SessionIndex & DirectoryDeadline },
    /**
     * The sessions table: every session's directory entry, whatever backend holds it. The bare
     * store, without the database backend's breaker: it is asked on the request path only after
     * the database has just answered (a move that found the session changed, a session served
     * from its copy), and writes that could meet a stalled database wait a bounded time (`end`;
     * the mirrored stores' copies written through). Its calls a request waits for have the
     * database backend's deadline all the same (`stores.database.bounded`: its reads, a claim, an
     * entry given back): a database that stalled just after answering held them until pg's
     * query_timeout (30 s), where a read through the backend is answered 503 at its deadline.
     */
    readonly directory: DatabaseStore,
    readonly revocations: RevocationList,
    readonly fallback: BackendName | 'none',
    private readonly events: BackendEvents,
    private readonly cookieValues: SessionCookieValue,
  ) {}

  /** Each backend pinged (through its breaker: a ping is the probe that closes an open one). */
  async health(): Promise<Record<BackendName, BackendHealth>> {
    const entries = await Promise.all(
      BACKENDS.map(async (b): Promise<[BackendName, BackendHealth]> => {
        if (isDisabled(this.stores[b])) return [b, 'disabled'];
        try {
          await this.stores[b].ping();
        } catch {
          return [b, 'down'];
        }
        try {
          await this.stores[b].writable?.();
          return [b, 'up'];
        } catch {
          return [b, 'read_only'];
        }
      }),
    );
    return Object.fromEntries(entries) as Record<BackendName, BackendHealth>;
  }

  /** The cookie value for a session `backend` holds under `token`. */
  cookieValue(backend: BackendName, token: string): string {
    return this.cookieValues.format(backend, token);
  }

  /** The backend a cookie value points at, if it is one of ours. */
  static backendOf(cookieValue: string): BackendName | undefined {
    return SessionCookieValue.backendOf(cookieValue);
  }

  /**
   * The live session a cookie names, or undefined. When Redis cannot serve, the session's
   * database copy does (the mirror): the user stays logged in. Not with SESSION_FALLBACK=none:
   * the session is unknown (BackendUnavailableError), as the operator chose, rather than served,
   * and counted, as a fallback. A sealed cookie has no such way round: its copy is keyed by the
   * session id inside the seal, which a store that cannot open the seal does not have, so that
   * failure leaves it unknown too. Unknown is not logged out: what needs the session answers 503
   * (the browser keeps its cookie), not a 401 that would send the user to log in
   * (SessionControl.unknown).
   */
  open(cookieValue: string): Promise<SessionRecord | undefined> {
    // Two size checks when no take is under way or waiting for its retry (the read path is benchmarked).
    return this.takes.size === 0 && this.untaken.size === 0 ? this.opened(cookieValue) : this.openedAfterTake(cookieValue);
  }

  /**
   * A move out of Redis on this instance is taking what saves left in Redis after it read the
   * session (takeLeftBehind): it removes that copy, then saves its changes on top of the moved
   * one. Served in between — a cookie naming Redis reads through to the moved copy, one naming
   * the database reads it — the session lacked a change answered 200, and a change saved on it
   * went on without it. So the request waits for the take, and opens the session again.
   */
  private async openedAfterTake(cookieValue: string): Promise<SessionRecord | undefined> {
    // Else a session revoked by revoke-all, or given a new id, kept every open on the slow path.
    this.forgetExpiredUntaken();
    const record = await this.opened(cookieValue);
    const retry = record && this.untaken.get(record.idHash)?.retry;
    if (retry) {
      // Marked as a take under way at once: a request opening the session meanwhile waits for it too.
      this.untaken.delete(record.idHash);
      const again = retry().then(() => undefined, () => undefined);
      this.takes.set(record.idHash, again);
      void again.then(() => {
        if (this.takes.get(record.idHash) === again) this.takes.delete(record.idHash);
      });
    }
    const taking = record && this.takes.get(record.idHash);
    if (!taking) return record;
    // The take asks the directory, and a stalled database holds it up to the database backend's
    // deadline (LAST_RESORT_TIMEOUT_MS by default, with its grace on a busy process: guarded-store.ts).
    // Past TAKE_WAIT_MS the read is served as before the take was waited for.
    await withinDeadline(taking, TAKE_WAIT_MS, 'a take of a copy left in Redis').catch(() => undefined);
    return this.opened(cookieValue);
  }

  /** Failed takes of sessions past their absolute expiry: nothing opens those again. */
  private forgetExpiredUntaken(): void {
    const now = Date.now();
    for (const [idHash, untaken] of this.untaken) if (untaken.until <= now) this.untaken.delete(idHash);
  }

  private async opened(cookieValue: string): Promise<SessionRecord | undefined> {
    const parsed = this.cookieValues.parse(cookieValue);
    if (!parsed) return undefined;
    const { backend, token } = parsed;
    let record: SessionRecord | undefined;
    let redisFailed = false;
    let readFailed: SessionRecord | undefined;
    try {
      record = await this.stores[backend].load(token);
    } catch (err) {
      if (!(err instanceof BackendUnavailableError)) throw err;
      // Its store (or, for Redis, the database copy) could not be asked: unknown (503), unless
      // this session was ended, which is known here without its record. (A sealed cookie's
      // token is not its session id, so it never matches here: its failure stays unknown.)
      if (this.revocations.isSessionIdRevoked(hashSessionId(token))) return undefined;
      if (backend !== 'redis' || err.backend === 'database' || this.fallback === 'none') throw err;
      redisFailed = true;
      // The copy is written behind: this instance's change of a moment ago goes first.
      await this.stores.redis.copyWritten?.(hashSessionId(token));
      record = await this.stores.database.load(token);
      if (record) {
        this.events.fallback(backend, 'database', err.reason);
        record = { ...record, backend: 'database' };
        if (record.heldBy === 'redis' && err.reason !== 'circuit_open') readFailed = record;
      }
    }
    if (record?.heldBy === 'cookie' && backend !== 'cookie') record = await this.entryAfterSeals(record, token);
    if (record?.heldBy === 'redis' && backend !== 'cookie' && !redisFailed && this.stores.redis.available) {
      // A cookie naming the database while Redis holds the session (a tab that missed the move),
      // or naming Redis and read through to the entry (a miss, maybe just before a move's write
      // landed there, the entry read just after): served from Redis, where the
      // session's changes go. Served from the database's entry, its changes would go there and
      // split the session in two copies that each take changes. A move into Redis writes the
      // entry first, then Redis (MirroredStore.moveIn): read in between, the entry names Redis at
      // the version the move is writing there, and Redis has no copy yet. So the read waits for
      // such a move on this instance, as for a move out of the cookie (`whereMovedOut`).
      await this.moveIntoRedisSettled(record.idHash);
      const held = await this.redisCopy(token);
      if (held && held.version >= record.version) record = held;
    }
    if (record?.movedOut) record = await this.whereMovedOut(record);
    if (!record || this.revocations.isRevoked(record)) return undefined;
    if (parsed.unsigned && record.issuedAt >= this.cookieValues.unsignedBefore) return undefined;
    // Not scheduled now (see `takeAfterFailedRead`): the record carries what its request's write needs for it.
    if (!readFailed) return record;
    const marked: FailedReadRecord = { ...record, [FAILED_READ]: readFailed };
    return marked;
  }

  /**
   * A session held by Redis, served its database copy because its Redis read failed (`read`): the
   * request goes on from that copy — moves it (the flag says elsewhere), saves it there, or points
   * its cookie at it (SessionWriter: `adopt`) — and the session leaves Redis without a move out of
   * it, which nothing evicts. A request sent with a cookie naming Redis (a tab, before the browser
   * had this answer) was served that copy once Redis answered, and saved on it, answered 200, while
   * the session went on elsewhere without that change. So the copy is taken at the session's next
   * open on this instance, as after a failed-over Redis write (`takeLandedLater`): any copy at the
   * version read or past it, evicted, what was saved on it since the read carried over
   * (`carriedFrom`: the data read) — unless the directory entry still names Redis then (the
   * session never left: the take leaves the copy be). Not after an open breaker (`opened`): an
   * outage must not put every session it serves from the database into `untaken`. Not over a take
   * already waiting for the session: made from an older version, it takes every copy this one would.
   *
   * Scheduled by the request's write (`update`, `migrate`, `adopt`: the record served carries the
   * data read, FAILED_READ), once it has written, not by the open that served the copy: any open of
   * the session in between — a tab whose Redis read succeeded — made the take, found the entry
   * still naming Redis (the request had not written yet), left the copy, and the take was spent;
   * the request then wrote the session elsewhere, and a tab's save on the Redis copy, answered
   * 200, was never carried over. A request that writes nothing (its route failed) leaves the
   * session in Redis, and nothing to take. Nor for a session ended meanwhile: never opened again,
   * its take would keep every open on the slow path (`open`) until its absolute expiry.
   */
  private takeAfterFailedRead(read: SessionRecord): void {
    if (this.untaken.has(read.idHash) || this.revocations.isRevoked(read)) return;
    const taken: Written = { cookieValue: this.cookieValue('database', read.id), record: read, carriedFrom: read.data };
    this.rememberUntaken(read, () => this.takeWhatIsLeft(taken, read, read.version - 1));
  }

  /**
   * `write`, of a record served after its Redis read failed (`read`), and then the take of the
   * Redis copy scheduled (`takeAfterFailedRead`) — after a write that failed too: it may have
   * landed all the same (a database write let go at its deadline).
   *
   * Before the write, this instance's copy of the session still written behind goes to the
   * database (`unwrittenFirst`): a tab whose Redis read succeeded may have saved there since this
   * request read the copy.
   */
  private takenAfter(read: SessionRecord, write: () => Promise<Written | undefined>): Promise<Written | undefined> {
    return this.unwrittenFirst(read)
      .then(write)
      .finally(() => this.takeAfterFailedRead(read));
  }

  /**
   * This instance's copy of a session Redis holds, written behind and still waiting, goes to the
   * database before a request served the database copy after its Redis read failed (`read`)
   * writes that copy: its save, move or claim is checked against the version it read, which the
   * row, a change behind Redis, still had. Written before that copy, the request's write made the
   * row the database's (or another holder's), the copy of a tab's save made in Redis meanwhile,
   * answered 200, was then refused, and that change was left in Redis alone — lost for good when
   * Redis came back empty before the take (test/switching/failed-read-save-after-unwritten-copy.test.ts).
   * Written first, that copy puts the row past what the request read: its write is refused, and
   * merges onto the row (or follows the session back into Redis). Cost: on this path only, a wait
   * for the batch holding that copy, when this instance holds one.
   */
  private async unwrittenFirst(read: SessionRecord): Promise<void> {
    await this.stores.redis.copyWritten?.(read.idHash);
  }

  /**
   * A sealed cookie older than a move out of the cookie (CookieStore.load: `movedOut`): a request
   * the browser sent before it had the move's answer. Served from the seal, it showed the session
   * as it was before every change since — and a reload a moment later showed them again. Served
   * from where the session went (its cookie is pointed there, as for any cookie that missed a
   * move) when it is there, newer than the seal: its database entry, or the Redis copy that entry
   * names. Otherwise from the seal, as before: the database cannot be asked (asked through its
   * deadline and breaker: a cookie read never waited on the database before), the entry is not
   * newer (a carry-over of later seals on its way), or names a holder that does not have it now
   * (a move into Redis whose write is still on its way; another instance's seal).
   *
   * A seal made after the move out read the session (a save told cookie a moment longer) is
   * carried over by that move (`carryOver`), a version past the one it wrote: until then the
   * entry, stepped past the seal (MOVE_OUT_STEP), lacks the seal's change, answered 200.
   * So a read of such a seal waits for that move as a read waits for a take (at most
   * TAKE_WAIT_MS; past it, or if the move failed, it is served the seal).
   */
  private async whereMovedOut(sealed: SessionRecord): Promise<SessionRecord> {
    if (!this.stores.database.available) return sealed;
    // Every move out of the cookie under way that read the session before this seal: each carries it over.
    const carrying = [...(this.movesOutOfCookie.get(sealed.idHash) ?? [])].filter((move) => sealed.version > move.readVersion).map((move) => move.done);
    if (carrying.length > 0) {
      const settled = await withinDeadline(Promise.all(carrying), TAKE_WAIT_MS, 'a move out of the cookie').then(
        () => true,
        () => false,
      );
      if (!settled) return sealed;
    }
    const entry = await this.stores.database.load(sealed.id).catch(() => undefined);
    if (!entry || entry.version <= sealed.version) return sealed;
    if (!entry.heldBy) return entry;
    const held = entry.heldBy === 'redis' && this.stores.redis.available ? await this.redisCopy(sealed.id) : undefined;
    return held && held.version >= entry.version ? held : sealed;
  }

  /**
   * The directory entry of a session a sealed cookie holds, read with a cookie naming another
   * backend (the answer of a tab's request that came after the one that moved the session into
   * the cookie): it is the cookie's copy, written behind its seals (MirroredStore), and was served
   * without a change sealed here a moment before, answered 200 — a tab's save, or a take's
   * carry-over of saves left in Redis. This instance's copy of the seals goes first, and the entry
   * is read again. (Another instance's seals are not known here, as in CookieStore.)
   */
  private async entryAfterSeals(entry: SessionRecord, token: string): Promise<SessionRecord> {
    const cookie = this.stores.cookie;
    try {
      // The batch has no deadline of its own (as in `latest`): let go at the database backend's.
      if (!cookie.copyWritten || !(await this.stores.database.bounded(cookie.copyWritten(entry.idHash)))) return entry;
      const again = await this.stores.database.load(token);
      return again && again.version > entry.version ? again : entry;
    } catch (err) {
      // The entry as read, as before: the database cannot say more now.
      if (!(err instanceof BackendUnavailableError)) throw err;
      return entry;
    }
  }

  /** A move of session `idHash` into Redis under way on this instance, waited for (at most TAKE_WAIT_MS). */
  private async moveIntoRedisSettled(idHash: string): Promise<void> {
    const move = this.moves.get(idHash);
    if (move?.to !== 'redis' || move.settledAt !== undefined) return;
    await withinDeadline(move.done, TAKE_WAIT_MS, 'a move into redis').catch(() => undefined);
  }

  /**
   * A session served from its database copy while its backend was down stays there for now
   * (its cookie is pointed at the copy): the directory is told, so that listings name where it
   * is. Not fatal: the session is served either way.
   */
  async adopt(record: SessionRecord): Promise<void> {
    const read = (record as FailedReadRecord)[FAILED_READ];
    if (read) await this.unwrittenFirst(read);
    try {
      // The session is written already: a stalled database holds the answer no longer than the
      // database backend's deadline. A claim let go then lands later or not at all, as one that
      // failed at pg's query_timeout may (its statement runs on: postgres-driver.ts): at the
      // version it served only (DatabaseStore.claim), so never over a move made since.
      await this.stores.database.bounded(this.directory.claim(record), 'save');
    } catch (err) {
      this.events.secondaryFailure(err, 'claim the database copy');
    }
    // Pointed at the database copy (or let go, maybe landing later): the session may have left Redis.
    if (read) this.takeAfterFailedRead(read);
  }

  /**
   * Where a session chosen for `backend` should go now: there, unless its breaker is open (or,
   * on a Redis Cluster, the master that would hold session `idHash` has fallen silent), in which
   * case the fallback (when configured and itself available).
   */
  placement(backend: BackendName, idHash?: string): BackendName {
    const store = this.stores[backend];
    const available = idHash !== undefined && store.availableFor ? store.availableFor(idHash) : store.available;
    if (available || this.fallback === 'none') return backend;
    return this.stores[this.fallback].available ? this.fallback : backend;
  }

  /** Stores a new session in `target`, or in the fallback when `target` cannot serve. */
  create(record: SessionRecord, target: BackendName): Promise<Written> {
    return this.writeWithFallback(record, target, (store, r) => store.create(r));
  }

  /**
   * Writes a changed (or touched) session where it is. Returns undefined when the session
   * ended meanwhile: a save never brings it back. A session whose backend cannot serve moves
   * to the fallback, as in `create`.
   */
  update(record: SessionRecord, mode: 'save' | 'touch', concurrency?: SaveConcurrency): Promise<Written | undefined> {
    const read = (record as FailedReadRecord)[FAILED_READ];
    // A touch leaves the session where its entry says it is (Redis): the record keeps the mark for
    // the `adopt` that points the entry at the copy. A save writes the entry the database's.
    if (read === undefined || mode === 'touch') return this.updated(record, mode, concurrency);
    return this.takenAfter(read, () => this.updated(unmarked(record), mode, concurrency));
  }

  /** `update`, of a record without the mark of a failed Redis read (or a touch). */
  private async updated(record: SessionRecord, mode: 'save' | 'touch', concurrency?: SaveConcurrency): Promise<Written | undefined> {
    if (this.revocations.isRevoked(record)) return undefined;
    const store = this.stores[record.backend];
    try {
      const token = mode === 'save' ? await this.saveMerging(store, record, concurrency, true) : await store.touch(record);
      return token === undefined ? undefined : { cookieValue: this.cookieValue(record.backend, token), record };
    } catch (err) {
      // The session's own backend failed; not the database copy a Redis miss fell back to
      // reading (MirroredStore.load), which is no reason to move the session.
      if (!(err instanceof BackendUnavailableError) || err.backend !== record.backend) throw err;
      if (mode === 'save' && concurrency && this.fallback === 'database' && record.backend !== 'database') return this.saveOnFallback(record, concurrency, err);
      return this.writeWithFallback(record, record.backend, (s, r) => s.create(r), err);
    }
  }

  /**
   * A save whose backend failed, to the database fallback, which holds the session's copy.
   * Requests of one session that fail over together (in flight when Redis stops answering)
   * each wrote their own whole record there, the last overwriting the others' changes. So here
   * they go one at a time (per session, on this instance): a copy older than what the request
   * read (the copy is written behind) is replaced by the request's record, which is newer; a
   * copy at or past it was written by a request racing this one, and the save merges onto it
   * as `update` does. A copy that names another backend than the one that failed holds no
   * session of its own: the session moved there since this request read it (into a sealed
   * cookie, say), and the save follows it there, as a save in place does (`saveMerging`).
   */
  private saveOnFallback(record: SessionRecord, concurrency: SaveConcurrency, failure: BackendUnavailableError): Promise<Written | undefined> {
    const store = this.stores.database;
    if (!store.available) return this.writeWithFallback(record, record.backend, (s, r) => s.create(r), failure);
    const earlier = this.fallbackSaves.get(record.idHash);
    const save = (async () => {
      await earlier?.catch(() => undefined);
      if (this.revocations.isRevoked(record)) return undefined;
      const r = { ...record, backend: 'database' as const };
      // The copy is written behind: this instance's copy of a save made a moment ago (another tab's,
      // in the backend that failed) goes first, as before any read of the copy in place of Redis
      // (`opened`). Read one change old, the copy was merged onto or replaced by this save, and that
      // tab's copy, landing after it, was refused (the row now the database's): its change, answered
      // 200, was left in Redis alone — missing while the breaker stayed open, and lost for good if
      // Redis came back empty (test/switching/fallback-save-after-unwritten-copy.test.ts).
      await this.stores[record.backend].copyWritten?.(record.idHash);
      const copy = await store.load(record.id);
      // The entry names Redis, which failed this save: written as the database's, it takes the
      // session out of Redis, as a move out of it does, and at the version such a move writes
      // (movedVersion: a step past what a copy there can reach). At the next version, the entry
      // stood where Redis's copy went next — another tab's save there, answered 200 (only this
      // save had missed the deadline) — and a move out of Redis of that copy passed the entry's
      // check (not newer than the move read) and wrote over this save's change, answered 200 too
      // (test/switching/fallback-save-steps-past-redis.test.ts). A step past, the entry refuses
      // that move, which merges onto it, and the take scheduled below carries the copy's saves over.
      if (record.backend === 'redis' && copy?.heldBy === 'redis') r.version = movedVersion('redis', concurrency.readVersion);
      const merged: { onto?: SessionRecord } = {};
      const token = copy && copy.version >= concurrency.readVersion ? await this.saveMerging(store, r, concurrency, false, record.backend, (onto) => (merged.onto = onto)) : await store.create(r);
      if (token === undefined) return undefined;
      // Followed where the session went (`r` is what was written, where): no fallback. This
      // request's own Redis write, or the copy it read, may still be live there all the same (as
      // below): the move that put the session where it followed it takes such a copy only if it
      // moved it out of Redis itself — not one made of the database copy a Redis read had failed
      // over to, nor one refused by an entry such a move wrote first.
      if (r.backend !== 'database') {
        const followed: Written = { cookieValue: this.cookieValue(r.backend, token), record: r };
        if (record.backend === 'redis') this.takeLandedLater({ ...followed, carriedFrom: record.data }, record, concurrency.readVersion, concurrency, failure.reason);
        return followed;
      }
      this.events.fallback(record.backend, 'database', failure.reason);
      const written: Written = { cookieValue: this.cookieValue('database', token), record: r, fellBackFrom: record.backend, fallbackReason: failure.reason };
      // The entry named Redis past what this request read: moved into Redis since (or saved there
      // by a racing request), by a request whose answer, naming Redis, the browser may keep. The
      // entry names Redis for any Redis session, so the save wrote it as the database's beside
      // that Redis copy, which went on serving the session without this change, answered 200,
      // once Redis answered again. Now the entry is the session, as after a move out of Redis: the
      // Redis copy is taken (evicted, what saves left there carried over) at the session's next
      // open on this instance, before it is served (`untaken`; Redis has just failed this save).
      if (copy?.heldBy === 'redis' && copy.version > concurrency.readVersion) this.rememberUntaken(record, () => this.takeWhatIsLeft(written, record, concurrency.readVersion, concurrency));
      // Else the Redis copy this request read, or its own save there, landed past Redis's deadline.
      // What it sent there (`record`), not the fallback's write (merged onto a database copy that may
      // hold changes Redis never had), is what a copy left there was made from (`carriedFrom`) —
      // unless the write merged onto the entry of a Redis copy (its copy written behind, named
      // Redis), a state of the session Redis had since this request read it: what Redis holds
      // now was made from that. Against the request's older read, a key changed in between read as
      // changed since on the database's side, and a later save of it in Redis, answered 200, was
      // not carried over (test/switching/fallback-take-after-merge.test.ts).
      else if (record.backend === 'redis') this.takeLandedLater({ ...written, carriedFrom: merged.onto?.heldBy === 'redis' ? merged.onto.data : record.data }, record, concurrency.readVersion, concurrency);
      return written;
    })();
    this.fallbackSaves.set(record.idHash, save);
    void save
      .catch(() => undefined)
      .then(() => {
        if (this.fallbackSaves.get(record.idHash) === save) this.fallbackSaves.delete(record.idHash);
      });
    return save;
  }

  /**
   * Optimistic concurrency: the save succeeds only over the version this request read. If
   * another request saved first, re-read and apply only the keys this request changed on top
   * (field-level merge), so a platform switch and a preference change made at the same time
   * both survive. The cookie backend detects it only against the seals this instance made
   * (CookieStore: the browser keeps the last cookie, whichever instance sealed it).
   * `record` is updated in place to what was saved, merge included: the caller answers with it.
   * `failedOver`: the backend whose failure sent this save to `store` (`saveOnFallback`): a move
   * to any other backend is followed, one back to it is not.
   */
  private async saveMerging(store: ServingStore, record: SessionRecord, concurrency?: SaveConcurrency, followMove = false, failedOver?: BackendName, mergedOnto?: (onto: SessionRecord) => void) {
    if (!concurrency || !record.id) return store.save(record);
    let attempt = record;
    let expected = concurrency.readVersion;
    let follows = followMove || failedOver ? SAVE_FOLLOWS : 0;
    let lookedForMove = false;
    for (let tries = 0; ; tries++) {
      try {
        const token = await store.save(attempt, expected);
        // No copy at all: ended — or, in Redis, moved away since this request read it (a flag
        // flip's move took the copy: `takeLeftBehind`). Looked into once in each store the save
        // follows the session to, as a conflict is: read through to its database entry, the
        // session says where it lives now, and the save follows it there rather than answering 409.
        if (token !== undefined || follows === 0 || lookedForMove || store.backend !== 'redis') return token;
        lookedForMove = true;
        throw new SessionConflictError(expected);
      } catch (err) {
        if (!(err instanceof SessionConflictError) || tries >= 20) throw err;
        // Many writers on one session: a little jitter stops them colliding in lockstep. Not for a
        // refusal that carries the session (the cookie store's latest seal, checked and made in
        // one step): retried after a wait, on that seal, it was retried on one the other tabs had
        // sealed past meanwhile, and refused again until its tries ran out (409).
        if (tries > 1 && !err.current) await new Promise((r) => setTimeout(r, Math.random() * 2 * tries));
        // A sealed cookie cannot be looked up by id: its store's refusal carries the session, or
        // says it moved out, and the directory says where.
        const current = err.current ?? (store.backend === 'cookie' ? await this.current(record) : await store.load(record.id));
        if (!current) return undefined;
        // What changed it was a move (an instance that disagrees about the flag): the session is
        // held elsewhere now, and a save follows it there (SAVE_FOLLOWS) — one failing over too
        // (`saveOnFallback`), unless back to the backend that failed it. Written here, where
        // nothing reads it any more, the change would be answered 200 and never seen again. (A
        // save failing over from Redis, slow under load, wrote the directory entry of a session
        // moved into a sealed cookie meanwhile: the entry, named the database's, went on beside
        // the seal, and the first move of either lost the other's changes.)
        const holder = current.heldBy ?? current.backend;
        const follow = holder !== store.backend && holder !== failedOver && follows > 0 && this.stores[holder].available;
        // Moved on more often than a save follows it: written here, beside where the session now
        // is, the change would be answered 200 and lost as above. Refused instead (409): the client retries.
        if (followMove && holder !== store.backend && follows === 0 && this.stores[holder].available) throw err;
        // Followed into Redis from its directory entry, the changes go onto the session as Redis
        // holds it. The entry may be a move's that Redis refused (a save had put Redis at the
        // version the move wrote, first): merged onto the entry's data, at Redis's version, the
        // save passed Redis's compare-and-set and wrote over that save's change, answered 200.
        // A Redis copy older than the entry is a move's write still on its way: the entry is the session.
        const held = follow && current.heldBy === 'redis' ? await this.redisCopy(record.id) : undefined;
        const onto = held && held.version >= current.version ? held : current;
        mergedOnto?.(onto);
        // Failing over from Redis onto an entry that names Redis (not followed there): a step past it, as in `saveOnFallback`.
        const version = !follow && failedOver === 'redis' && holder === 'redis' ? movedVersion('redis', onto.version) : onto.version + 1;
        attempt = { ...record, backend: follow ? holder : attempt.backend, data: mergeChanges(onto, record, concurrency), version };
        expected = onto.version;
        if (follow) {
          follows--;
          lookedForMove = false;
          store = this.stores[holder];
        }
        // Into the cookie from its directory entry, not a seal: checked against a seal of the entry's
        // own version too (`entryInCookie`).
        if (store.backend === 'cookie' && !err.current) expected = entryInCookie(onto.version);
        Object.assign(record, attempt); // see above: `update` returns this record as written, where it was written
      }
    }
  }

  /**
   * Moves a session to `target`: written there first, then removed from where it was, so a
   * failure in between leaves two copies rather than none.
   *
   * Requests of one session that arrive together after a flag flip all read it where it was,
   * and all want to move it. The first moves it. Each of the others, having read it no later than
   * that one (its version), finds the move here, waits for it, and then saves its own changes on
   * top, where the session now is (`concurrency`: what it read and changed, merged as in
   * `update`) — or, having changed nothing, writes nothing. So no request's change overwrites
   * another's. This holds on one instance; README says what instances that disagree can do.
   * A request that read the session after that move had finished (`readAt`) did not arrive
   * together with it: another instance has moved the session back since, and it moves again.
   * Out of Redis, one that read a later version while the move is still under way (a save
   * reached Redis after the move read it) waits for it too: the move takes that save with it
   * (`takeLeftBehind`). Moving the session itself, it was refused (the move wrote 1,024 versions
   * on, past anything it read: session.ts, MOVE_OUT_STEP), took the moved copy as it
   * stood, without that save, and answered with its cookie: a read with it showed the session one
   * change older than a change answered 200, until the take had put the save back. (Out of the
   * database a move writes the next version, and such a request's own move goes through over it;
   * out of the cookie one that read a later seal is refused as here, and the move carries that
   * seal over: CookieStore.evict.)
   */
  async migrate(record: SessionRecord, target: BackendName, cause: MigrationCause = 'flag', concurrency?: SaveConcurrency, readAt = Date.now()): Promise<Written | undefined> {
    const read = (record as FailedReadRecord)[FAILED_READ];
    if (read !== undefined) return this.takenAfter(read, () => this.migrate(unmarked(record), target, cause, concurrency, readAt));
    const readVersion = concurrency?.readVersion ?? record.version;
    const now = Date.now();
    const earlier = this.moves.get(record.idHash);
    const together = earlier && (earlier.settledAt === undefined || readAt <= earlier.settledAt);
    const waits = earlier && (readVersion <= earlier.readVersion || (earlier.from === 'redis' && earlier.settledAt === undefined));
    if (earlier && together && waits && earlier.from === record.backend && now - earlier.at < MOVE_MEMORY_MS) {
      // Past MOVE_WAIT_MS this request moves the session itself, as if it had not arrived with
      // that move: the directory entry, which that move wrote on (past what this request read),
      // refuses it, and it saves its changes on top of the session as it now is. Out of Redis,
      // the saves that move has yet to take are missing there until it has (a read shows the
      // session one change older meanwhile, as it did before this wait), not lost.
      const moved = await withinDeadline(earlier.done, MOVE_WAIT_MS, 'an earlier move of the session').catch(() => undefined);
      if (moved && moved.record.backend !== record.backend) {
        if (!concurrency) return moved;
        return this.update({ ...record, backend: moved.record.backend }, 'save', concurrency);
      }
    }
    const entry = { from: record.backend, to: target, readVersion, at: now } as MoveMemory;
    const done = (entry.done = this.move(record, target, cause, concurrency, entry));
    const movesOut = entry.from === 'redis' ? this.movesOutOfRedis : entry.from === 'cookie' ? this.movesOutOfCookie : undefined;
    movesOut?.set(record.idHash, (movesOut.get(record.idHash) ?? new Set()).add(entry));
    void done
      .finally(() => {
        entry.settledAt = Date.now();
        const out = movesOut?.get(record.idHash);
        if (out?.delete(entry) && out.size === 0) movesOut!.delete(record.idHash);
      })
      .catch(() => undefined);
    // Deleted first so that the map stays in the order of `at`: forgetting stops at the first young entry.
    this.moves.delete(record.idHash);
    this.moves.set(record.idHash, entry);
    for (const [idHash, move] of this.moves) {
      if (now - move.at < MOVE_MEMORY_MS) break;
      this.moves.delete(idHash);
    }
    return done;
  }

  /**
   * Written to `target` first, then removed from where it was (only the copy that was read: one
   * saved there since stays), so a failure in between leaves two copies rather than none.
   *
   * Instances that disagree about the flag can move one session in opposite directions at once.
   * Each move writes the next version and is ordered by the session's directory entry
   * (`moveIn`): a move that finds the session changed since it was read writes nothing. It
   * reads the session as it now is, puts its own changes on top (as `update` merges them), and
   * tries again, as often as `saveMerging` does (MOVE_TRIES); then it gives up as a save that
   * found the session ended does.
   */
  private async move(record: SessionRecord, target: BackendName, cause: MigrationCause, concurrency?: SaveConcurrency, self?: MoveMemory): Promise<Written | undefined> {
    // A seal made here since this move read the session, found when a refused try marked the
    // cookie moved out (`moveTried`): carried over where the move put the session, as below.
    const sealed: MovedOutMeanwhile = {};
    const moved = await this.moveTried(record, target, cause, sealed, concurrency, self);
    // Against what the refused try had read (`over`), not what the move wrote: it may have gone on
    // — refused, followed — while the session kept moving, and written it with every change made
    // since; the seal's older values of those keys, put back over them, undid changes answered 200
    // (test/switching/late-carry-over-of-refused-move-out.test.ts). So only its own changes go on,
    // where the session still holds what that try read (carryOver: `carriedFrom`).
    return moved && sealed.meanwhile ? this.carryOver({ ...moved, carriedFrom: sealed.over }, sealed.meanwhile, record, concurrency) : moved;
  }

  /** `move`'s tries; `sealed.meanwhile`: a seal a refused try found made since (CookieStore.evict). */
  private async moveTried(record: SessionRecord, target: BackendName, cause: MigrationCause, sealed: MovedOutMeanwhile, concurrency?: SaveConcurrency, self?: MoveMemory): Promise<Written | undefined> {
    let source = record;
    let readVersion = concurrency?.readVersion ?? record.version;
    for (let tries = 0; tries < MOVE_TRIES; tries++) {
      if (this.revocations.isRevoked(source)) return undefined;
      // Many writers on one session: a little jitter stops them colliding in lockstep (saveMerging).
      if (tries > 1) await new Promise((r) => setTimeout(r, Math.random() * 2 * tries));
      // Into Redis while a copy left there has yet to be taken (`leftInRedisTaken`): not moved now;
      // this request's changes are written where the session is, as a save in place would write
      // them (a later request moves it).
      if (target === 'redis' && source.backend !== 'redis' && !(await this.leftInRedisTaken(record.idHash, self))) return this.update(source, concurrency ? 'save' : 'touch', concurrency);
      const from = source.backend;
      const version = readVersion;
      // A mirrored target writes the directory entry first (it orders moves), then the session:
      // if the session write fails, the entry is given back, or the fallback's move, judged
      // against the version this move read, would find the entry moved on and be refused — a
      // Redis refusing writes (full, read-only) then failed every change of the session (409).
      // Out of Redis, a step past what the copy left there can reach (session.ts, MOVE_OUT_STEP).
      const next = movedVersion(from, readVersion);
      // Under the database backend's deadline (the fallback's write waits for it). Let go, it may
      // land later: only while the entry is still this move's (`target` at `next`: DatabaseStore.giveBack);
      // a later write of the entry names another holder or version. Not an entry whose write did
      // not answer (the database's failure: MirroredStore.moveIn): not known to be this move's, it
      // may be another move's of the same version, which Redis holds — given back, and the fallback
      // written over it, that move's change, answered 200, was gone. The fallback's write is
      // ordered by the entry as it is (refused past what this move read; `current` then reads it).
      let entryUnanswered = false;
      const giveBack = (failure: BackendUnavailableError) => {
        entryUnanswered = failure.backend === 'database';
        if (entryUnanswered) return Promise.resolve();
        return this.stores.database.bounded(this.directory.giveBack(record.idHash, target, from, version, next), 'save').catch((err: unknown) => this.events.secondaryFailure(err, 'give back the directory entry'));
      };
      let written: Written | undefined;
      try {
        written = await this.writeWithFallback({ ...source, version: next }, target, (store, r) => store.moveIn(r, readVersion), undefined, giveBack).catch((err: unknown) =>
          entryUnanswered ? this.moveInUnordered(err, { ...source, version: next, backend: target }, readVersion) : Promise.reject(err),
        );
      } catch (err) {
        // The target holds the session already, newer than this move read it (the cookie store's
        // own seal: CookieStore.moveIn): written there as below, this request's changes on top. A
        // version past both that seal and the one this move gave the directory entry (`next`),
        // which took the older copy it read: that entry's copy is what a later request reads, and
        // it must find the seal here newer than it. Sealed at `next` itself (or left there: the
        // seal that refused the move may be of that very version), the seal and the entry were two
        // sessions at one version; a save following the session here from the entry, or a move
        // out of the cookie of the entry's copy, passed (the cookie store refuses, and carries
        // over, only a strictly newer seal), and the seal's change, answered 200, was gone. The
        // save is checked against that seal (its version as read): one sealed since merges.
        if (!(err instanceof SessionConflictError && err.current)) throw err;
        const mine = { ...record, backend: target, data: concurrency ? mergeChanges(err.current, record, concurrency) : err.current.data, version: Math.max(err.current.version, next) + 1 };
        written = await this.update(mine, concurrency ? 'save' : 'touch', concurrency && { ...concurrency, readVersion: err.current.version });
        // Moved all the same (the directory entry names the target): the copy read is evicted as
        // below. Left in Redis at the version read, it was served to a cookie naming Redis (a
        // request sent before the browser had this move's answer), took that request's save, and
        // went on as a second session beside the seal, each taking changes answered 200: the
        // browser kept the one whose cookie came last, the other's changes were gone for good.
        if (!written) return undefined;
      }
      if (written) {
        if (target === 'redis') this.takeLandedLater(written, record, next, concurrency);
        if (written.record.backend === from) return written;
        this.events.migrated(from, written.record.backend, written.fellBackFrom ? 'fallback' : cause);
        let sealed: SessionRecord | undefined;
        // Before the eviction, which drops it (MirroredStore.evict): see `takeWhatIsLeft`.
        const unwritten = from === 'redis' ? this.stores.redis.unwritten?.(record.idHash) : undefined;
        try {
          await this.stores[from].evict({ ...source, version: readVersion });
        } catch (err) {
          // The cookie store's answer when it sealed the session anew since this move read it
          // (other requests' changes, in cookies the moved session does not read): carried over.
          if (err instanceof SessionConflictError && err.current) sealed = err.current;
          else this.events.secondaryFailure(err, `evict from ${from}`);
        }
        if (sealed && sealed.version > readVersion) return this.carryOver(written, sealed, record, concurrency);
        return from === 'redis' ? this.takeWhatIsLeft({ ...written, movedFrom: source.data }, record, readVersion, concurrency, unwritten) : written;
      }
      // Refused: by the directory entry, or by the cookie store after the entry took the move (a
      // move out of the cookie since, into a version past what this move read: CookieStore.moveIn).
      // That move out wrote the entry after this one, over it, so the entry names where it went.
      const current = await this.current(record);
      if (!current) return undefined;
      // Out of the cookie, and the entry names another holder: the session has left the seal this
      // move read (this move's own entry write, let go at its wait, landed just before the
      // fallback's write it then refused; or a move of another request's). It is marked moved
      // out here, as a move that wrote it marks it: unmarked, a tab's request sent with that
      // seal (before this move's answer) was served it, without this move's change, and saved
      // on it, answered 200 — a second session, in the cookie, beside the one the entry names.
      // Not while a move out of the cookie that read an older seal is under way here: it marks it
      // itself, and carries over the seals made since it read — this move's among them, which a
      // mark made first would have replaced (CookieStore.evict keeps the latest seal or the mark).
      // Nor over a seal made here past the entry read (`current.version`): the session came back
      // into the cookie since that entry (another request's move in, a version past it) and the
      // seal is the session; marked, every save of it — this move's, following it there, and every
      // tab's — was refused (409) until a later move in replaced the mark, and the copy of that seal
      // waiting to be written was dropped (test/switching/refused-move-out-after-return.test.ts).
      const olderMoveOut = () => [...(this.movesOutOfCookie.get(record.idHash) ?? [])].some((move) => move !== self && move.readVersion < readVersion);
      if (from === 'cookie' && (current.heldBy ?? current.backend) !== 'cookie' && !olderMoveOut()) {
        try {
          await this.stores.cookie.evict({ ...source, version: readVersion }, current.version);
        } catch (err) {
          // A seal made here since this move read it (a tab's save, told cookie a moment longer):
          // its copy, written behind, finds the entry another holder's and is not taken there.
          if (err instanceof SessionConflictError && err.current) {
            if (err.current.version > readVersion) {
              sealed.meanwhile = err.current;
              sealed.over = source.data;
            }
          } else this.events.secondaryFailure(err, 'evict from cookie');
        }
      }
      const mine = { ...record, backend: current.backend, data: concurrency ? mergeChanges(current, record, concurrency) : current.data, version: current.version };
      // Moved where this request would have moved it: written there as `update` would (a touch
      // with nothing changed, which also seals a cookie session's copy anew for this response).
      // A save goes a version past the entry, checked against the entry as read (into the cookie,
      // against a seal of the entry's own version too: `entryInCookie`): saved at the
      // entry's own version, against what this request read before it, it sealed (the entry
      // naming a cookie whose move had not sealed yet) a second session beside the entry at one
      // version, with this request's change only in the seal; a save following the session from
      // the entry passed the cookie store's check and sealed over it — the change, answered 200,
      // was gone (test/switching/refused-move-seals-entry-version.test.ts).
      if (current.backend === target) {
        if (!concurrency) return this.update(mine, 'touch');
        return this.update({ ...mine, version: current.version + 1 }, 'save', { ...concurrency, readVersion: target === 'cookie' ? entryInCookie(current.version) : current.version });
      }
      source = mine;
      readVersion = current.version;
    }
    return undefined;
  }

  /**
   * A move whose directory entry's write did not answer in time, and whose write to the database
   * fallback then failed too (`err`): the database does not answer this request at all, and
   * cannot order the move. As while it is down (MirroredStore.moveIn), the move goes on unordered
   * — a 503 here failed every request of a session the flag moves, reads included, for as long as
   * the database stalled, though the target could serve it. A database that answers no one takes
   * no save of the session meanwhile either (the split the entry guards against), and the entry,
   * if it lands late, names the target at the version written there.
   */
  private async moveInUnordered(err: unknown, record: SessionRecord, readVersion: number): Promise<Written | undefined> {
    const store = this.stores[record.backend];
    if (!(err instanceof BackendUnavailableError && err.backend === 'database' && store.moveInUnordered)) throw err;
    const token = await store.moveInUnordered(record, readVersion);
    return token === undefined ? undefined : { cookieValue: this.cookieValue(record.backend, token), record };
  }

  /**
   * After a move out of Redis: the copy saves left there since the move read the session (at
   * `readVersion`), taken (`takeLeftBehind`). Redis not answering whether there is one is not
   * "none": taken for none, such a copy went on taking the saves of requests that had read it
   * there, answered 200, while every read followed the directory to the moved copy, and a later
   * move left them behind for good. Asked again at the session's next open (`untaken`).
   */
  private async takeWhatIsLeft(moved: Written, record: SessionRecord, readVersion: number, concurrency?: SaveConcurrency, unwritten?: SessionRecord): Promise<Written | undefined> {
    const redis = this.stores.redis;
    // Not asked while Redis, or the Cluster master holding the session, has not answered of late
    // (its breaker open; `availableFor`): asked, it failed at once or at its deadline, and a retry
    // made by each open of the session waited that deadline every time.
    if (!(redis.availableFor ? redis.availableFor(record.idHash) : redis.available)) {
      this.rememberUntaken(record, () => this.takeWhatIsLeft(moved, record, readVersion, concurrency, unwritten));
      return moved;
    }
    let left: SessionRecord | undefined;
    try {
      left = await this.heldInRedis(record.id);
    } catch (err) {
      if (!(err instanceof BackendUnavailableError)) return moved;
      this.rememberUntaken(record, () => this.takeWhatIsLeft(moved, record, readVersion, concurrency, unwritten));
      return moved;
    }
    if (left && left.version > readVersion) return this.takeLeftBehind(moved, left, record, concurrency);
    // No copy in Redis at all, while this instance's copy of the session, written behind and not
    // yet written when the move evicted it (`unwritten`, which the eviction drops), holds a save
    // made there since the move read it: Redis lost it (restarted empty, the key evicted). That
    // copy is all that is left of the save (the database would refuse it anyway: the entry has
    // moved on), and it is carried over as a copy taken from Redis would be. Left, the change,
    // answered 200 a moment before Redis failed, was gone for good (helper 13's flip harness with
    // Redis restarted empty; test/switching/move-out-of-emptied-redis.test.ts).
    if (!left && unwritten && unwritten.version > readVersion) return this.carryOver(moved, unwritten, record, concurrency);
    return moved;
  }

  /**
   * A write into Redis that failed over to the database (`written`): Redis did not answer in time,
   * or failed with the command maybe sent, and the write may have landed all the same. Redis then
   * holds a copy beside the database's — what this request wrote there (a move's at `from`, a
   * save's), or, for a save that did not land, the copy it read (at `from`) — and nothing evicts
   * it: a request with a cookie naming Redis (a tab that sent it before this answer, or one whose
   * save, or refused move, that copy took meanwhile, answered with such a cookie) was served it and
   * saved on it, answered 200, while the session went on in the database; whichever cookie the
   * browser kept, one side's changes were gone. So that copy is taken as a move out of Redis takes
   * what is left there (`takeWhatIsLeft`: any copy at `from` or past, evicted, its changes carried
   * over) at the session's next open on this instance. Not after an open breaker: the command was
   * never sent, and nothing is answered from Redis until the breaker closes — so a Redis outage
   * does not put every session failing over into `untaken` (each open would retry the take). Nor
   * after a move whose directory entry's write was not answered (no `fallbackReason`): Redis was
   * not sent it either, and a copy at `from` or past there since is another move's, live.
   */
  private takeLandedLater(written: Written, record: SessionRecord, from: number, concurrency?: SaveConcurrency, reason = written.fellBackFrom === 'redis' ? written.fallbackReason : undefined): void {
    // `reason`: why Redis failed the write (a save that then followed its session elsewhere has no fallback of its own).
    if (reason !== 'error' && reason !== 'timeout') return;
    // Marked as such a take (`carriedFrom`): made at a later open, after this request answered.
    const taken: Written = { ...written, carriedFrom: written.carriedFrom ?? written.record.data };
    this.rememberUntaken(record, () => this.takeWhatIsLeft(taken, record, from - 1, concurrency));
  }

  /** A take that could not be made now, tried again by the session's next open on this instance (`untaken`). */
  private rememberUntaken(record: SessionRecord, retry: () => Promise<unknown>): void {
    this.forgetExpiredUntaken();
    // A take already waiting for the session is made first, then this one: each carries a copy
    // over against what its own request wrote or sent. Replaced, the waiting one was never made,
    // and a copy a tab had saved on after that request's read was carried over by this one,
    // against older data (a request that read the session long before, slow to fail over): a
    // key changed between the two read as changed since, and the tab's change, answered 200, was
    // gone (test/switching/later-take-over-waiting-take.test.ts).
    const waiting = this.untaken.get(record.idHash)?.retry;
    const takes = waiting ? () => waiting().catch(() => undefined).then(retry) : retry;
    this.untaken.set(record.idHash, { retry: takes, until: record.absoluteExpiresAt });
  }

  /**
   * Whether a move of session `idHash` into Redis may go on: no copy a move out of Redis left there
   * (saves that reached it after that move read the session) is still to be taken. Written over,
   * that copy's saves, answered 200, were gone — its versions stay below the moved one's
   * (MOVE_OUT_STEP), Redis takes the move over it (the directory orders moves, but no entry names
   * that copy), and the take, finding Redis holding the session again, leaves it be. So the move
   * waits, at most MOVE_WAIT_MS, for every move out of Redis under way (not itself: a move into
   * Redis of a copy read there, refused, moves on from the database) and for a take a retry is
   * making (`takes`); a take failed by the database and not yet retried (`untaken`) is still to be
   * taken too. Moved on since, the session is read again where the refused move reads it.
   */
  private async leftInRedisTaken(idHash: string, self?: MoveMemory): Promise<boolean> {
    const waited: Promise<unknown>[] = [...(this.movesOutOfRedis.get(idHash) ?? [])].filter((move) => move !== self).map((move) => move.done);
    const retried = this.takes.get(idHash);
    if (retried) waited.push(retried);
    if (waited.length > 0) {
      const settled = await withinDeadline(Promise.all(waited.map((done) => done.catch(() => undefined))), MOVE_WAIT_MS, 'a move out of redis').then(() => true, () => false);
      if (!settled) return false;
    }
    return !this.untaken.has(idHash);
  }

  /**
   * Saves reached the Redis copy after a move read it: requests that had read the session there
   * before it moved, and were told to keep it there (the flag flipped back for them). So the
   * eviction kept that copy, and left there it would go on taking their changes (answered 200)
   * while every read follows the directory to the moved one. Moving it again lost the race to
   * such saves as often as it was tried. Instead it is taken: removed at the version just read,
   * a Redis round trip in which a save rarely lands (one that does is taken with the next try);
   * from then on a save finds no copy there and follows the session (`saveMerging`). What the
   * taken saves changed is then saved on top of the moved copy, merged as `update` merges, so a
   * request that followed meanwhile keeps its change too. A copy the directory says is the
   * session's again (moved back by an instance that disagrees) is left in place, and only this
   * request's own changes are put back on it where it lacks them (`ownChangesOnTop`).
   */
  private async takeLeftBehind(moved: Written, left: SessionRecord, record: SessionRecord, concurrency?: SaveConcurrency, evictionSent = false): Promise<Written | undefined> {
    let taken: () => void = () => {};
    const taking = new Promise<void>((resolve) => (taken = resolve));
    try {
      return await this.takeLeftBehindMarked(moved, left, record, concurrency, () => this.takes.set(record.idHash, taking), evictionSent);
    } finally {
      taken();
      if (this.takes.get(record.idHash) === taking) this.takes.delete(record.idHash);
    }
  }

  /**
   * `takeLeftBehind`, which calls `removing` before it first removes the copy: from then on, `open`
   * waits for it. `evictionSent`: tried again after an eviction of `left` that Redis did not answer
   * in time, and may have made all the same.
   */
  private async takeLeftBehindMarked(moved: Written, left: SessionRecord, record: SessionRecord, concurrency: SaveConcurrency | undefined, removing: () => void, evictionSent: boolean): Promise<Written | undefined> {
    // The copy of that eviction: found gone, it may be this take's own removal.
    const sent = evictionSent ? left.version : undefined;
    // Failed by the database, the take is tried again by the session's next open (`untaken`).
    const later = (retry: () => Promise<unknown>) => (err: unknown) => {
      // Only an outage passes: a carry-over too large for its cookie, or outrun by other writers
      // (409), failed again on every open of the session, each time holding it up to TAKE_WAIT_MS.
      if (!(err instanceof BackendUnavailableError || isDatabaseOutageError(err))) throw err;
      this.rememberUntaken(record, retry);
      throw err;
    };
    for (let tries = 0; tries < 10; tries++) {
      const entry = await this.stores.database.bounded(this.directory.loadByHash(record.idHash), 'load').catch(later(() => this.takeLeftBehind(moved, left, record, concurrency, left.version === sent)));
      if (!entry) return moved;
      // Held by Redis again (moved back, or a move that found this Redis copy newer took it for
      // the session: `current`): this request's own changes, in the moved copy, may not be in it.
      // Not for the take of a failed-over write (`carriedFrom`), made at a later open: its request
      // answered long since, and the session went on from its change; put back now, that change
      // went over a later one made on the Redis copy (a key set again since, answered 200).
      if (entry.backend === 'redis') return moved.carriedFrom ? moved : this.ownChangesOnTop(moved, left, record, concurrency);
      let removed: boolean | void;
      removing();
      try {
        removed = await this.stores.redis.evict(left);
      } catch (err) {
        this.events.secondaryFailure(err, 'take a copy left in redis');
        // Not answered in time (or its breaker open): the copy, and the saves it holds, still
        // there. Given up on, it went on taking saves no read saw. Tried again at the next open;
        // the moved copy is this request's answer meanwhile.
        if (err instanceof BackendUnavailableError) this.rememberUntaken(record, () => this.takeLeftBehind(moved, left, record, concurrency, true));
        return moved;
      }
      let after: SessionRecord | undefined;
      try {
        after = await this.heldInRedis(record.id);
      } catch {
        // Redis did not answer (its deadline, its breaker): not gone. Taken for gone, the take gave
        // up on a copy still there, which went on taking the saves of requests that had read it
        // there, answered 200, while reads followed the directory to the moved copy. Read again —
        // unless this eviction removed it: tried again, the eviction finds nothing, the copy reads
        // as gone, and is taken for another request's removal (`removed === false`) — its saves,
        // only here now, were never carried over.
        if (removed !== true) continue;
      }
      if (after?.version === left.version) return moved; // not removed: Redis did not take the write
      if (after) {
        left = after;
        continue;
      }
      // Gone, but not removed by this take: another request took it first — moved it out of Redis
      // (its data is where that move wrote it) or took it as here (and carried it over). Carried
      // over again, its changes, older by now, went on top of those made since (a take held for
      // seconds by a slow directory read wrote a preference answered long before over later ones).
      // Only this request's own changes are put on top again: a move of that copy into the
      // database writes over the moved one while it is still at the version this move wrote.
      // Not so when the directory entry is as this take read it: nobody took the copy (a move or a
      // take writes the entry), Redis lost it — restarted empty while this take, its eviction not
      // answered, waited for the session's next open — and its saves, answered 200, are only here
      // (their copies written behind were refused: the entry had moved on). Put back as removed.
      // Nor when an eviction of this very copy was sent before, not answered in time (a stalled Redis
      // runs it when it wakes): the entry tells nothing then — a save of the session where it now
      // is (another tab's, in the database) changes it too — and taken for another request's
      // removal, the copy's saves, answered 200, were gone for good
      // (test/switching/take-retried-after-landed-eviction.test.ts). Carried over again, had another
      // request taken it after all, they go back only where the session still holds what they
      // were carried onto (SaveConcurrency.carried).
      if (removed === false && left.version !== sent) {
        const now = await this.stores.database.bounded(this.directory.loadByHash(record.idHash), 'load').catch(later(() => this.takeLeftBehind(moved, left, record, concurrency, left.version === sent)));
        if (now?.version !== entry.version || now.backend !== entry.backend) return this.ownChangesOnTop(moved, left, record, concurrency);
      }
      // Removed (or lost by Redis): its saves are now only here.
      const taken = left;
      const carry = (): Promise<Written | undefined> => this.carryOver(moved, taken, record, concurrency).catch(later(carry));
      return carry();
    }
    this.events.secondaryFailure(new Error('saves kept landing on it, or Redis did not answer'), 'take a copy left in redis');
    return moved;
  }

  /**
   * This request's own changes put back where the session now is, for a take that found the
   * moved copy may have been replaced by one without them: written over by another request's
   * move of `left` into the database (at the version this move wrote), or set aside for the Redis
   * copy (`current`). Only the keys that now hold what `left` held: a key changed since by a
   * request that read this move's change keeps what that request set (the later answer). The
   * request has not answered yet, so its changes landing now are as if it had saved now.
   */
  private async ownChangesOnTop(moved: Written, left: SessionRecord, record: SessionRecord, concurrency?: SaveConcurrency): Promise<Written | undefined> {
    if (!concurrency || concurrency.changedKeys.size === 0) return moved;
    const now = await this.current(record).catch(() => undefined);
    if (!now) return moved;
    const lost = (key: string) => isDeepStrictEqual(now.data[key], left.data[key]) && !isDeepStrictEqual(now.data[key], moved.record.data[key]);
    const changedKeys = new Set([...concurrency.changedKeys].filter(lost));
    if (changedKeys.size === 0) return moved;
    const patches = new Map([...(concurrency.patches ?? [])].filter(([key]) => changedKeys.has(key)));
    return this.update({ ...moved.record, version: moved.record.version + 1 }, 'save', { readVersion: moved.record.version, changedKeys, patches });
  }

  /**
   * What other requests saved where the session was, after `record`'s move read it (`left`, no
   * longer anywhere a read looks), saved on top of the moved copy, merged as `update` merges:
   * their changes, as the keys (and, for objects, the fields) in which `left` with this move's
   * own changes on top differs from what the move wrote. A key (or a field) set anew since the
   * move, by a request that read the moved copy, keeps what it was set to (the later answer:
   * SaveConcurrency.carried).
   */
  private async carryOver(moved: Written, left: SessionRecord, record: SessionRecord, concurrency?: SaveConcurrency): Promise<Written | undefined> {
    const mine = concurrency ? mergeChanges(left, record, concurrency) : left.data;
    const base = moved.carriedFrom ?? moved.movedFrom ?? moved.record.data;
    const changedKeys = new Set(Object.keys({ ...base, ...mine }).filter((key) => !isDeepStrictEqual(base[key], mine[key])));
    if (changedKeys.size === 0) return moved;
    const patches = new Map<string, Record<string, unknown>>();
    for (const key of changedKeys) {
      const [was, now] = [base[key], mine[key]];
      if (isPlainObject(was) && isPlainObject(now)) patches.set(key, mergePatchBetween(was, now));
    }
    const carried = { over: base, values: mine };
    // Against another base than the moved copy, only what changed since that base goes on it.
    const data = base !== moved.record.data ? mergeChanges(moved.record, moved.record, { readVersion: moved.record.version, changedKeys, patches, carried }) : mine;
    const merged = { ...moved.record, data, version: moved.record.version + 1 };
    return this.update(merged, 'save', { readVersion: moved.record.version, changedKeys, patches, carried });
  }


  /**
   * The session's copy in Redis itself, if Redis has one and answers: not the database copy that
   * a miss reads through to (the mirrored store labels that one `database`).
   */
  private redisCopy(id: string): Promise<SessionRecord | undefined> {
    return this.heldInRedis(id).catch(() => undefined);
  }

  /** `redisCopy`, failed where Redis does not answer: for a take, to which that copy is not gone. */
  private async heldInRedis(id: string): Promise<SessionRecord | undefined> {
    const redis = this.stores.redis;
    const held = await (redis.loadHeld ? redis.loadHeld(id) : redis.load(id));
    return held?.backend === 'redis' ? held : undefined;
  }

  /**
   * A session as it now is, after a move found it changed: where its directory entry says it is
   * held, or that entry itself — the server's copy of a sealed cookie, or of a Redis key not yet
   * written (a move in flight) or unreachable.
   */
  private async current(record: SessionRecord): Promise<SessionRecord | undefined> {
    const entry = await this.stores.database.bounded(this.directory.loadByHash(record.idHash), 'load');
    if (!entry || this.revocations.isRevoked(entry)) return undefined;
    if (entry.backend === 'redis' || entry.backend === 'database') {
      // Where the entry names Redis, a miss's read through is the answer: the copy, labelled
      // `database`, which the move then puts back into Redis (Redis back empty). Where it names
      // the database, that copy is only the entry read again (newer, it is still no Redis copy
      // to point the entry at): Redis itself is asked.
      const held = entry.backend === 'redis' ? await this.stores.redis.load(record.id).catch(() => undefined) : await this.redisCopy(record.id);
      if (held && held.version >= entry.version && (entry.backend === 'redis' || held.version > entry.version)) {
        // A Redis copy newer than an entry that says the database holds the session: a save
        // landed in Redis after a move out read it, and the copy outlived its eviction. It is the
        // session; the entry is pointed back at it, so that its copies reach the entry again.
        if (entry.backend !== 'redis') await this.stores.database.bounded(this.directory.moveIn(held, entry.version), 'save').catch((err: unknown) => this.events.secondaryFailure(err, 'point the directory at Redis'));
        return held;
      }
    }
    return { ...entry, id: record.id };
  }

  /**
   * Ends a session: its id goes on the revocation list first (so no copy anywhere — a cookie,
   * a Redis key written while Redis was unreachable — can serve it again), then the stored
   * copies are removed. Never throws for an unreachable backend.
   *
   * The directory row is deleted here as well as by a mirrored store's own destroy: Redis may be
   * switched off (REDIS_URL=none) with sessions still naming it, and its stand-in deletes
   * nothing. (A cookie session's store, complete on its own, would record the revocation; it
   * finds it recorded already, and writes nothing.)
   */
  async end(record: SessionRecord): Promise<void> {
    await this.revocations.revokeSession(record.idHash, record.absoluteExpiresAt);
    // Revoked, it is never opened again: a take waiting for its next open would only hold its data.
    this.untaken.delete(record.idHash);
    const removals = [{ what: `destroy in ${record.backend}`, done: this.stores[record.backend].destroy(record) }];
    if (record.backend !== 'database') removals.push({ what: 'destroy its directory entry', done: this.directory.destroy(record) });
    // Revoked, the session is over: a removal that does not answer is not waited for. Redis has a
    // deadline of its own (its guard); what can stall is the database, under every backend (the
    // directory, a mirrored store's pending copies, a cookie session's revocation row).
    await Promise.all(removals.map(({ what, done }) => withinDeadline(done, REMOVAL_WAIT_MS, what).catch((err: unknown) => this.events.secondaryFailure(err, what))));
  }

  /**
   * Whether a session read earlier in a request is still live: not revoked, and still stored
   * (a logout elsewhere removes it). A store that cannot answer does not make it dead.
   */
  async isLive(record: SessionRecord): Promise<boolean> {
    if (this.revocations.isRevoked(record)) return false;
    if (!record.id) return true;
    return this.latest(record).then((r) => r !== undefined, () => true);
  }

  /**
   * The freshest stored copy of a session, revoked or not (a rotation reads the id it has just
   * ended): where it lives, or for a sealed cookie its database copy — the browser holds the
   * cookie a concurrent save set, the server only that copy.
   */
  async latest(record: SessionRecord): Promise<SessionRecord | undefined> {
    if (record.backend !== 'cookie') return this.stores[record.backend].load(record.id);
    // The copy is written behind: this instance's pending saves go first. Their batch has no
    // deadline of its own (mirrored-store.ts: a write behind waits for the database), and a stall
    // held the request until pg's query_timeout; let go at the database backend's, the read is
    // not made (it would miss them): unknown, as when that read itself times out. The batch is
    // counted where it lands (MirroredStore: onCopied, onMirrorError), not here.
    const flushed = this.stores.cookie.flush?.();
    if (flushed) await this.stores.database.bounded(flushed);
    return this.stores.database.bounded(this.directory.load(record.id), 'load');
  }

  /**
   * Every live session of a user, whatever backend holds it: from the sessions table (every
   * session has its row there), through the database backend's guard, so that a listing has a
   * deadline and shows in the store metrics as `list`.
   */
  async listByUser(userId: number): Promise<SessionRecord[]> {
    return (await this.directoryOf(userId)).filter((r) => !this.revocations.isRevoked(r));
  }

  /**
   * A user's sessions in the sessions table, and those this instance holds whose row the
   * database has not taken yet (a login while its disk was full): a session the list does not
   * show, "log out my other sessions" does not end.
   */
  private async directoryOf(userId: number): Promise<SessionRecord[]> {
    const stored = await this.stores.database.listByUser(userId);
    const listed = new Set(stored.map((r) => r.idHash));
    const now = Date.now();
    for (const backend of BACKENDS) {
      for (const record of this.stores[backend].unwrittenOf?.(userId) ?? []) {
        if (!listed.has(record.idHash) && record.expiresAt > now) stored.push(record);
      }
    }
    return stored;
  }

  /**
   * Logs a user out everywhere (but `exceptHandle`, a session that goes on under a new id): every
   * session issued before `notBefore` is revoked, so that no copy in any backend, nor one being
   * written meanwhile, can be served; then the stored ones are removed. Returns the live ones
   * ended, listed before the revocation (once revoked, a session no longer shows in a listing).
   * (`endUserSessions` does the same without the revocation epoch.)
   */
  async logOutUser(userId: number, { notBefore = Date.now(), exceptHandle }: { notBefore?: number; exceptHandle?: string } = {}): Promise<SessionRecord[]> {
    let listed: Awaited<ReturnType<typeof this.storedSessionsOf>>;
    try {
      listed = await this.storedSessionsOf(userId, exceptHandle);
    } catch (err) {
      // The list cannot be read (the database down, its breaker open): the user is logged out
      // all the same — the revocation needs no list — and the caller hears why nothing was counted.
      await this.revocations.revokeUser(userId, notBefore);
      throw err;
    }
    const { stored, live } = listed;
    await this.revocations.revokeUser(userId, notBefore);
    for (const record of stored) await this.end(record);
    return live;
  }

  /**
   * Every session issued before now stops working, in every backend (an epoch on the revocation
   * list: nothing is listed or deleted). Returns the instant, and how many live sessions that
   * ended as the directory counts them (those issued since the last revoke-all; a session a
   * per-user revocation had already ended is counted too until cleanup removes its row), or
   * undefined when the directory could not be read. The count is a promise of its own: the
   * revocation holds without the database (revocation-spool.ts), and nothing should wait for a
   * database that has stopped answering just to count.
   */
  async revokeAll(): Promise<{ before: number; ended: Promise<number | undefined> }> {
    const previous = this.revocations.allRevokedBefore;
    const before = await this.revocations.revokeAll();
    const ended = this.directory.countIssuedBetween(previous, before).catch(() => undefined);
    return { before, ended };
  }

  /**
   * Ends every session of a user except `exceptHandle`, one by one, in every backend; returns the
   * live ones ended. A session that starts meanwhile goes on (unlike `logOutUser`).
   *
   * Liveness is judged again just before each end: two of these at once (a double click) list
   * the same sessions, and each session counts for the call that ended it, not for both.
   */
  async endUserSessions(userId: number, exceptHandle?: string): Promise<SessionRecord[]> {
    const { stored } = await this.storedSessionsOf(userId, exceptHandle);
    const ended: SessionRecord[] = [];
    for (const record of stored) {
      const live = !this.revocations.isRevoked(record);
      await this.end(record);
      if (live) ended.push(record);
    }
    return ended;
  }

  /**
   * A user's sessions in the sessions table (through the database backend's guard, as
   * `listByUser`), unfiltered: sessions already revoked by an epoch (revoke-all) still have
   * copies to delete. Only the `live` ones count as ended by what ends them all.
   */
  private async storedSessionsOf(userId: number, exceptHandle?: string): Promise<{ stored: SessionRecord[]; live: SessionRecord[] }> {
    const stored = (await this.directoryOf(userId)).filter((r) => r.handle !== exceptHandle);
    return { stored, live: stored.filter((r) => !this.revocations.isRevoked(r)) };
  }

  /**
   * Writes `record` to `target`, or to the fallback when `target` cannot serve; undefined when the
   * write refuses (`moveIn`). `onFailure` runs once `target` has failed, before the fallback.
   */
  private writeWithFallback(record: SessionRecord, target: BackendName, write: (store: ServingStore, r: SessionRecord) => Promise<string>, earlier?: BackendUnavailableError): Promise<Written>;
  private writeWithFallback(record: SessionRecord, target: BackendName, write: (store: ServingStore, r: SessionRecord) => Promise<string | undefined>, earlier: undefined, onFailure: (failure: BackendUnavailableError) => Promise<void>): Promise<Written | undefined>;
  private async writeWithFallback(
    record: SessionRecord,
    target: BackendName,
    write: (store: ServingStore, r: SessionRecord) => Promise<string | undefined>,
    earlier?: BackendUnavailableError,
    onFailure?: (failure: BackendUnavailableError) => Promise<void>,
  ): Promise<Written | undefined> {
    let failure = earlier;
    if (!failure) {
      const r = { ...record, backend: target };
      try {
        const token = await write(this.stores[target], r);
        return token === undefined ? undefined : { cookieValue: this.cookieValue(target, token), record: r };
      } catch (err) {
        if (!(err instanceof BackendUnavailableError)) throw err;
        failure = err;
        await onFailure?.(err);
      }
    }
    const fallback = this.fallback;
    if (fallback === 'none' || fallback === target) throw failure;
    const r = { ...record, backend: fallback };
    const token = await write(this.stores[fallback], r);
    if (token === undefined) return undefined;
    // What failed may be a mirrored target's directory entry (its write not answered:
    // MirroredStore.moveIn), not the target, which was never sent the write: no reason of the
    // target's own, and not counted as the target failing (session_store_fallbacks_total, and the
    // rollback, which would take it for an outage of the target, and hold back its rollout).
    if (failure.backend !== target) return { cookieValue: this.cookieValue(fallback, token), record: r, fellBackFrom: target };
    this.events.fallback(target, fallback, failure.reason);
    return { cookieValue: this.cookieValue(fallback, token), record: r, fellBackFrom: target, fallbackReason: failure.reason };
  }
}

/**
 * The version a save into the cookie of changes merged onto the session's directory entry (of
 * `entryVersion`) is checked against: one below the entry's, so that a seal of the entry's own
 * version refuses it too, and it merges onto that seal. A move into the cookie writes the entry
 * (one version on from an entry it read, which lags the seals: copies are written behind) before
 * it seals, and another tab may have sealed that very version with its own change meanwhile, its
 * copy still waiting: the entry and the latest seal were two states of one version. A save
 * following the session from the entry (read in the database before the flip), or a move refused
 * by it, passed the cookie store's check (it refuses only a strictly newer seal) and sealed the
 * entry's data over that tab's change, answered 200
 * (test/switching/follow-into-cookie-entry-twin.test.ts). A seal of the entry's version that is
 * the entry's own state costs one more merge, in memory.
 */
function entryInCookie(entryVersion: number): number {
  return entryVersion - 1;
}

/** `current`'s data with the keys `record`'s request changed put on top (merge patches re-applied). */
function mergeChanges(current: SessionRecord, record: SessionRecord, concurrency: SaveConcurrency): SessionRecord['data'] {
  const merged: Record<string, unknown> = { ...current.data };
  const carried = concurrency.carried;
  for (const key of concurrency.changedKeys) {
    const patch = concurrency.patches?.get(key);
    if (carried) {
      // Carried over (other requests' changes): only where nobody has changed the key (or the
      // patch's field) since the copy they were carried onto. A key changed since holds a later
      // change, answered after them; put back, their older value would replace it.
      const unchanged = (now: unknown, then: unknown) => isDeepStrictEqual(now, then);
      const [now, then] = [current.data[key], carried.over[key]];
      if (patch && isPlainObject(now) && isPlainObject(then)) {
        const fields = Object.entries(patch).filter(([field]) => unchanged(now[field], then[field]));
        if (fields.length > 0) merged[key] = applyMergePatch(now, Object.fromEntries(fields));
      } else if (unchanged(now, then)) merged[key] = patch ? applyMergePatch(now, patch) : carried.values[key];
      continue;
    }
    merged[key] = patch ? applyMergePatch(current.data[key], patch) : record.data[key];
  }
  return merged as SessionRecord['data'];
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
