/**
 * A store plus a durable copy in the database — Django's cached_db, the other way round.
 *
 * The primary (Redis, or the sealed cookie) serves every read. Each write also lands in the
 * sessions table, with `backend` naming the primary, so that:
 *   - a Redis outage logs nobody out: the database copy serves until Redis is back;
 *   - every session of a user can be listed and revoked, cookie-held ones included.
 * The copy is written through at create (login, rotation, migration) and removed at destroy —
 * the auth-critical moments. Saves and touches are written behind: coalesced per session and
 * flushed every `flushMs` in one statement, so the request path pays no database write. A
 * change therefore reaches the copy within `flushMs` (README: the guarantee). Failures of the
 * copy are reported, never thrown: the primary is the source of truth. Copies written behind
 * that the database did not take are kept and tried again until it does (unless a newer change
 * of the session has replaced them): otherwise the copy would stay behind until the session's
 * next change, and a Redis failure in between would serve it — every change of a database
 * outage lost. The primary is the guarded one (deadline, breaker): a slow copy never trips the
 * primary's breaker.
 */
import { withinDeadline } from '../db/database.js';
import type { DatabaseStore } from './database-store.js';
import { BackendUnavailableError } from './errors.js';
import type { GuardedStore } from './guarded-store.js';
import { hashSessionId, type SessionRecord } from './session.js';
import type { IndexedSessionStore, SessionStore } from './store.js';

/**
 * How long a request waits for a copy written through (create, move, destroy) before going on
 * without it, as after a failed copy. The database copy is a secondary: a database that stops
 * answering must not hold requests that Redis or the cookie can serve until PostgreSQL's query
 * timeout. The write itself goes on, and may still land.
 */
const COPY_THROUGH_WAIT_MS = 2_000;
/** How long copies the database did not take wait before they are tried again. */
const COPY_RETRY_MS = 1_000;

export interface MirrorOptions {
  /**
   * On a miss in the primary, look in the copy: Redis may come back from an outage empty.
   * The copy is returned as a database session, so the caller moves it back (re-populates).
   * Off for the cookie: a cookie that does not open names no row.
   */
  readThrough?: boolean;
  /** Write-behind delay for saves and touches; 0 writes them through. */
  flushMs?: number;
  /** A copy written (failures go to `onMirrorError`): so that they can be counted against all. */
  onCopied?: (operation: string) => void;
  /** Copies kept after failures were written at last: how many sessions' copies caught up. */
  onCaughtUp?: (sessions: number) => void;
  /** Closed with copies the database did not take: how many sessions' latest changes they lose. */
  onClosedBehind?: (sessions: number) => void;
}

export class MirroredStore implements IndexedSessionStore {
  private readonly pending = new Map<string, SessionRecord>();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  /** The batch on its way with each session's copy, while it is (`copyWritten` waits for that one only). */
  private readonly onTheWay = new Map<string, Promise<void>>();
  /** The copies in a batch on its way, by session, while it is (`unwritten`). */
  private readonly copiesOnTheWay = new Map<string, SessionRecord>();
  private closed = false;
  /** Copies are waiting for a retry (see `retryLater`). */
  private behind = false;

  constructor(
    readonly primary: SessionStore,
    readonly mirror: DatabaseStore,
    private readonly onMirrorError: (err: unknown, operation: string) => void,
    private readonly options: MirrorOptions = {},
  ) {}

  get backend() {
    return this.primary.backend;
  }

  /** As available as the primary (a GuardedStore knows; a bare store is assumed up). */
  get available(): boolean {
    return (this.primary as Partial<Pick<GuardedStore, 'available'>>).available ?? true;
  }

  /** As available for this session as the primary (GuardedStore.availableFor). */
  availableFor(idHash: string): boolean {
    const primary = this.primary as Partial<Pick<GuardedStore, 'availableFor'>>;
    return primary.availableFor ? primary.availableFor(idHash) : this.available;
  }

  async load(token: string): Promise<SessionRecord | undefined> {
    const record = await this.primary.load(token);
    if (record || !this.options.readThrough) return record;
    try {
      // The copy is written behind: this instance's change of a moment ago goes first (a Redis
      // that lost the key, restarted empty, would otherwise serve the session one change older,
      // and the move back into Redis would make that for good).
      await this.copyWritten(hashSessionId(token));
      return await this.mirror.load(token);
    } catch (err) {
      this.onMirrorError(err, 'read-through');
      // Not known, rather than no session: the copy may be all that is left of it (Redis back
      // empty). Answered 503, the browser keeps its cookie; a 401 would log the user out.
      throw new BackendUnavailableError('database', 'error', { cause: err });
    }
  }

  /**
   * The session in the primary alone: for a caller that wants the primary's copy itself, which a
   * miss's read through would answer with the database copy after waiting for copies written
   * behind (SessionBackends.redisCopy, after every move out of Redis, where a miss is the rule).
   */
  loadHeld(token: string): Promise<SessionRecord | undefined> {
    return this.primary.load(token);
  }

  async create(record: SessionRecord): Promise<string> {
    const token = await this.primary.create(record);
    // Not taken (the database down or full): kept and written with the copies written behind,
    // or the session would be missing from its user's list — and from "log out my other
    // sessions" — until its next change, or for good if it had none.
    if (!(await this.copy('create', () => this.mirror.create(record), COPY_THROUGH_WAIT_MS))) this.retryLater([record]);
    return token;
  }

  /** The copies of `userId`'s sessions not in the database yet (waiting to be written, or for its return). */
  unwrittenOf(userId: number): SessionRecord[] {
    return [...this.pending.values()].filter((r) => r.userId === userId);
  }

  /**
   * The copy first: it is the session's directory entry, which orders moves between instances
   * (DatabaseStore.moveIn). If it cannot be written (the database is down), the move goes on
   * unordered, as before the directory could say.
   *
   * Not if it is only slow: the entry write not answered within COPY_THROUGH_WAIT_MS is still on
   * its way, and other requests go on meanwhile. Gone on unordered, the move wrote the primary
   * beside a save made where the session was (another instance's, or a tab's with a cookie naming
   * the database), evicted the database's copy it had read (a cookie naming the database then
   * read no session), and its entry, landing late, was refused: two sessions, each with a change
   * answered 200, and whichever cookie the browser kept, the other's change was gone. So the
   * move fails as the database's (BackendUnavailableError), the primary never sent it: the caller
   * writes to the fallback (SessionBackends.writeWithFallback; not giving back an entry it does
   * not know to be its own), ordered by the entry there, and a late entry finds the session moved
   * on and is refused — or, landed first, names a holder without the session, which the refused
   * fallback reads through to (SessionBackends.current) and moves again. A fallback the database
   * does not take either (its breaker open, or stalled too) leaves the move to go on unordered, as
   * when the database is down (`moveInUnordered`).
   */
  async moveIn(record: SessionRecord, readVersion: number): Promise<string | undefined> {
    let taken: string | undefined = record.id;
    let answered = false;
    const entry = async () => {
      try {
        taken = await this.mirror.moveIn(record, readVersion);
      } finally {
        answered = true;
      }
    };
    await this.copy('create', entry, COPY_THROUGH_WAIT_MS);
    if (!answered) throw new BackendUnavailableError('database', 'timeout');
    return taken === undefined ? undefined : this.primary.moveIn(record, readVersion);
  }

  /** `moveIn` without the directory entry: for a move the database answers neither way (SessionBackends.moveInUnordered). */
  moveInUnordered(record: SessionRecord, readVersion: number): Promise<string | undefined> {
    return this.primary.moveIn(record, readVersion);
  }

  async save(record: SessionRecord, expectedVersion?: number): Promise<string | undefined> {
    const token = await this.primary.save(record, expectedVersion);
    // An upsert of the whole record: the copy may be missing if an earlier copy write failed.
    if (token !== undefined) await this.copyLater(record);
    return token;
  }

  async touch(record: SessionRecord): Promise<string | undefined> {
    const token = await this.primary.touch(record);
    if (token !== undefined) await this.copyLater(record);
    return token;
  }

  async destroy(record: SessionRecord): Promise<void> {
    // A batch already on its way may hold this session, and one that fails puts it back to wait:
    // let them land or come back first, or an upsert could put the row back after the delete
    // (and, at a rotation, keep the handle from the new id's row).
    for (;;) {
      this.pending.delete(record.idHash);
      const inFlight = this.flushing;
      await inFlight;
      if (!this.pending.has(record.idHash) && this.flushing === inFlight) break;
    }
    await Promise.all([this.primary.destroy(record), this.copy('destroy', () => this.mirror.destroy(record), COPY_THROUGH_WAIT_MS)]);
  }

  /**
   * This session's copy written, if this instance still holds it (waiting, or in a batch on its
   * way), before the copy is read in place of the primary: else a change acknowledged within
   * MIRROR_FLUSH_MS is served without, and a change then saved to the copy drops it for good (the
   * late copy does not overwrite a session that has moved on). Waits at most as long as a copy
   * written through; past that, the copy is read as it is. A session of which this instance holds
   * no copy (a logged-out or expired session's cookie, a tab's cookie naming Redis after a move out
   * of it) waits for nothing: not for a batch of other sessions' copies. True when it held one:
   * a copy read before it was written is to be read again.
   */
  async copyWritten(idHash: string): Promise<boolean> {
    const written = this.pending.has(idHash) ? this.flush() : this.onTheWay.get(idHash);
    if (!written) return false;
    await withinDeadline(written, COPY_THROUGH_WAIT_MS, "the write of a session's copy").catch(() => undefined);
    return true;
  }

  /**
   * This instance's copy of session `idHash` not yet in the database: waiting, or in a batch on
   * its way. What the primary was last written by this instance, which the primary may have lost
   * since (Redis restarted empty): SessionBackends.takeWhatIsLeft carries it over when a move out
   * of Redis finds nothing left there, its entry having moved on past where the copy would land.
   */
  unwritten(idHash: string): SessionRecord | undefined {
    return this.pending.get(idHash) ?? this.copiesOnTheWay.get(idHash);
  }

  /** Writes every pending copy now (also on close, so a clean shutdown loses nothing). */
  flush(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending.size === 0) return this.flushing;
    const batch = [...this.pending.values()];
    this.pending.clear();
    const done = this.flushing.then(async () => {
      if (!(await this.copy('save', () => this.mirror.upsertMany(batch)))) return this.retryLater(batch);
      if (this.behind) {
        this.behind = false;
        this.options.onCaughtUp?.(batch.length);
      }
    });
    this.flushing = done;
    for (const record of batch) {
      this.onTheWay.set(record.idHash, done);
      this.copiesOnTheWay.set(record.idHash, record);
    }
    void done
      .catch(() => undefined)
      .then(() => {
        for (const record of batch) {
          if (this.onTheWay.get(record.idHash) !== done) continue;
          this.onTheWay.delete(record.idHash);
          if (this.copiesOnTheWay.get(record.idHash) === record) this.copiesOnTheWay.delete(record.idHash);
        }
      });
    return done;
  }

  private async copyLater(record: SessionRecord) {
    // Written through, a copy is still conditional (upsertMany): it may land after a newer save
    // or after a migration has claimed the row.
    if (!this.options.flushMs) {
      if (!(await this.copy('save', () => this.mirror.upsertMany([record])))) this.retryLater([record]);
      return;
    }
    // A touch of the version a request read, after another request's save of the next one: the
    // copy waiting is the newer, and stays (the database would refuse to go back to the older).
    const waiting = this.pending.get(record.idHash);
    if (!waiting || waiting.version <= record.version) this.pending.set(record.idHash, record);
    this.flushIn(this.options.flushMs);
  }

  /** Copies the database did not take wait again, behind any newer change of the same session. */
  private retryLater(batch: readonly SessionRecord[]) {
    this.behind = true;
    for (const record of batch) if (!this.pending.has(record.idHash)) this.pending.set(record.idHash, record);
    if (!this.closed) this.flushIn(COPY_RETRY_MS);
  }

  private flushIn(ms: number) {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => void this.flush(), ms);
    this.flushTimer.unref();
  }

  /**
   * The database copy stays: the destination has taken it over (or will, being the database).
   * The copy waiting is dropped; unless the primary marks nothing (false: a refused move's mark,
   * CookieStore.evict, over a seal newer than the entry the mover read): that copy is the live
   * session's, and it waits again.
   */
  evict(record: SessionRecord, unlessSealedPast?: number): Promise<boolean | void> {
    const waiting = this.pending.get(record.idHash);
    this.pending.delete(record.idHash);
    const evicted = this.primary.evict(record, unlessSealedPast);
    if (unlessSealedPast === undefined || !waiting) return evicted;
    return evicted.then((kept) => {
      if (kept === false && !this.pending.has(record.idHash)) {
        this.pending.set(record.idHash, waiting);
        this.flushIn(this.options.flushMs ?? 0);
      }
      return kept;
    });
  }

  async listByUser(userId: number): Promise<SessionRecord[]> {
    await this.flush();
    const all = await this.mirror.listByUser(userId);
    return all.filter((r) => r.backend === this.backend);
  }

  ping(): Promise<void> {
    return this.primary.ping();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    clearTimeout(this.flushTimer);
    // The database did not take them: lost with this process unless the session changes again.
    if (this.pending.size > 0) this.options.onClosedBehind?.(this.pending.size);
    await this.primary.close();
  }

  /**
   * Runs a write of the copy; a failure (or, with `waitMs`, no answer in time) is reported, not
   * thrown. True if it was written.
   */
  private async copy(operation: string, write: () => Promise<unknown>, waitMs?: number): Promise<boolean> {
    try {
      await (waitMs === undefined ? write() : withinDeadline(write(), waitMs, `the ${operation} of a session's copy`));
    } catch (err) {
      this.onMirrorError(err, operation);
      return false;
    }
    this.options.onCopied?.(operation);
    return true;
  }
}
