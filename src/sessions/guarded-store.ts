/**
 * A store behind a deadline and a circuit breaker (cockatiel), with every operation timed and
 * counted. While the breaker is open, calls fail at once with `BackendUnavailableError`, so
 * the caller can serve from the fallback without waiting on timeouts; after
 * `halfOpenAfterMs` one call is let through as a probe, and its success closes the breaker.
 *
 * The deadline is ours rather than cockatiel's timeout policy: that one builds an
 * AbortController, an event race and listeners for every call, which cost more than a Redis
 * round trip (docs/performance.md, "Where the time went", item 2). Here a call costs one timer. And a deadline is
 * judged only after the event loop has read the I/O that was waiting for it: on a saturated
 * process an answer can sit in the socket while other requests run, and that is our own
 * queueing, not the backend being slow — failing over then would move load to a slower backend
 * exactly when capacity is short (finding 1).
 */
import { CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen, isBrokenCircuitError, type CircuitBreakerPolicy } from 'cockatiel';
import type { BackendName } from '../config/config.js';
import type { StoreOperation } from '../metrics/metrics.js';
import { BackendUnavailableError, SessionConflictError, SessionTooLargeError, type FailureReason } from './errors.js';
import { hashSessionId, type SessionRecord } from './session.js';
import { isIndexed, isPartitioned, type IndexedSessionStore, type SessionIndex, type SessionStore } from './store.js';

const isCallerError = (err: unknown) => err instanceof SessionTooLargeError || err instanceof SessionConflictError;

/**
 * A store operation that missed its deadline. The breaker counts it as a failure unless it
 * waited through the same silence as a timeout already counted (`sameStall`).
 */
class StoreTimeoutError extends Error {
  override name = 'StoreTimeoutError';
  constructor(
    readonly backend: string,
    readonly ms: number,
    readonly sameStall = false,
  ) {
    super(`session backend ${backend} did not answer within ${ms} ms`);
  }
}

/**
 * An error of an operation that was already in flight when the backend's last counted error
 * came: the failure of one event, counted once (see `withDeadline`). Unwrapped before anyone
 * but the breaker sees it.
 */
class SameFailureError extends Error {
  override name = 'SameFailureError';
  constructor(readonly original: unknown) {
    super('failed with the operations in flight beside it');
  }
}
const unwrapped = (err: unknown) => (err instanceof SameFailureError ? err.original : err);

/** What the breaker counts: the backend's own failures, each stall and each event once. */
const isBackendFailure = (err: unknown) => !isCallerError(err) && !(err instanceof SameFailureError) && !(err instanceof StoreTimeoutError && err.sameStall);

/**
 * How long past its deadline an operation may still be waited for while the backend keeps
 * answering other operations, as a multiple of the deadline (100 ms → 1 s by default).
 */
const PROGRESS_GRACE_FACTOR = 10;

interface Liveness {
  /** When the backend last answered an operation (a success, or a refusal that is the caller's). */
  lastAnswerAt: number;
  /** When a timeout was last counted against the backend (see `sameStall`). */
  countedTimeoutAt: number;
  /** When an error was last counted against the backend (see SameFailureError). */
  countedErrorAt: number;
}

/**
 * Settles like `work`, or rejects with StoreTimeoutError when `work` has not settled within `ms`.
 *
 * Only a backend that has stopped answering is timed out, not one that is answering slower
 * than the process asks:
 * - A timer that fires late means the event loop was busy (a saturated server, a GC pause): the
 *   command may not even have been written yet (a pipelining client writes at the end of the
 *   tick), or its answer not yet read, so the deadline starts again.
 * - When the deadline passes while the backend has answered *other* operations since the last
 *   check (`lastAnswerAt`), it is alive and the queue is ours — answers arrive in order on one
 *   connection, so ours is behind them — and the deadline starts again. Where the backend is
 *   several servers that fail apart (a Redis Cluster's masters), each has its own `Liveness`:
 *   the answers of the others say nothing of the one that holds ours.
 * Either way, no longer than PROGRESS_GRACE_FACTOR deadlines in all. A hung backend answers
 * nothing and is timed out after one deadline on an idle process (two at most, when answers to
 * earlier commands were still arriving), and after the grace at worst on a saturated one.
 * - A deadline is judged after the loop has read pending I/O (setImmediate runs after the poll
 *   phase), so an answer already sitting in the socket is not a timeout.
 *
 * Every operation in flight when a backend falls silent times out together. They are one piece
 * of evidence, not fifty: a timeout counts against the backend only if no other was counted
 * since its operation began (otherwise it is `sameStall`). A stall of a few deadlines (a fork,
 * a scheduler hiccup) then costs the requests that waited on it, not two seconds of open breaker
 * and every active session moved to the fallback and back; a backend that stays silent under
 * traffic still adds one failure per deadline and opens the breaker after `breakerThreshold`.
 *
 * Errors are judged the same way. The operations on connections that end together (a pooler
 * restarted, an operator's `pg_terminate_backend`, a failover) all fail at once: counted one by
 * one, a dozen requests in flight opened the breaker, and on the backend that is the last resort
 * every user got 503 for `halfOpenAfterMs` after an event that had already passed. An error
 * counts only if no other was counted since its operation began (otherwise SameFailureError); a
 * backend that refuses every new operation still opens the breaker after `breakerThreshold`.
 */
function withDeadline<T>(work: Promise<T>, ms: number, backend: string, liveness: Liveness): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const armedAt = performance.now();
    let checkedAt = armedAt;
    const expire = () => {
      // Fired well after it was due: the loop was busy with other work, which is ours.
      const firedLate = performance.now() - checkedAt > ms * 1.5;
      setImmediate(() => {
        if (settled) return;
        const judgedAt = performance.now();
        const stillWorking = firedLate || liveness.lastAnswerAt > checkedAt;
        if (stillWorking && judgedAt - armedAt < ms * PROGRESS_GRACE_FACTOR) {
          checkedAt = judgedAt;
          timer = setTimeout(expire, ms);
          return;
        }
        settled = true;
        const sameStall = liveness.countedTimeoutAt >= armedAt;
        if (!sameStall) liveness.countedTimeoutAt = judgedAt;
        reject(new StoreTimeoutError(backend, ms, sameStall));
      });
    };
    let timer: NodeJS.Timeout | undefined;
    work.then(
      (value) => {
        clearTimeout(timer);
        liveness.lastAnswerAt = performance.now();
        if (settled) return;
        settled = true;
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (isCallerError(err)) liveness.lastAnswerAt = performance.now();
        if (settled) return;
        settled = true;
        if (isCallerError(err)) return reject(err);
        if (liveness.countedErrorAt >= armedAt) return reject(new SameFailureError(err));
        liveness.countedErrorAt = performance.now();
        reject(err);
      },
    );
    // Armed after `work`'s own reaction has had its turn: a store that answers at once (the
    // sealed cookie) settles first and costs no timer. Creating and clearing a lone 100 ms timer
    // per operation was about 3 µs of a cookie read.
    queueMicrotask(() => {
      if (!settled) timer = setTimeout(expire, ms);
    });
  });
}

export interface StoreObserver {
  /** `err`: what the backend said, for an `error` outcome (a timeout is the guard's own verdict). */
  operation(backend: BackendName, operation: StoreOperation, outcome: 'success' | 'error' | 'timeout', seconds: number, err?: unknown): void;
  availability(backend: BackendName, up: boolean): void;
  /** A probe the backend answered with an error (not a timeout, not an open breaker): what it said. */
  probeFailed?(backend: BackendName, err: unknown): void;
  /**
   * A call on the backend made outside the guard, under its deadline (`bounded`): counted with the
   * backend's operations, neither timed nor judged by the rollback, as the breaker does not judge
   * it (the guard's own calls in flight beside it are the evidence of a stall).
   */
  outside?(backend: BackendName, operation: StoreOperation, outcome: 'success' | 'error' | 'timeout'): void;
}

export interface GuardOptions {
  timeoutMs: number;
  /**
   * The deadline of calls made outside the guard (`bounded`), when not `timeoutMs`. Such a call
   * has no fallback to fail over to: the short deadline that exists to fail over fast answered a
   * slow but working database with 503.
   */
  outsideTimeoutMs?: number;
  breakerThreshold: number;
  halfOpenAfterMs: number;
}

class GuardedSessionStore implements SessionStore {
  /** Only when the store it guards can list: `isIndexed` sees through the guard. */
  declare readonly listByUser?: (userId: number) => Promise<SessionRecord[]>;
  private readonly breaker: CircuitBreakerPolicy;
  private readonly timeoutMs: number;
  private readonly outsideTimeoutMs: number;
  private readonly halfOpenAfterMs: number;

  constructor(
    readonly inner: SessionStore,
    options: GuardOptions,
    private readonly observer: StoreObserver,
  ) {
    // A session too large for its backend, or saved meanwhile by another request, is the
    // caller's to handle: the backend itself is fine. (cockatiel neither counts nor resets on an
    // error its filter declines, while closed.)
    if (isIndexed(inner)) this.listByUser = (userId) => this.run('list', () => inner.listByUser(userId));
    if (isPartitioned(inner)) this.partitionOf = (idHash) => inner.partitionOf(idHash);
    // Nor does a write the backend answered with a refusal (its disk full, a read-only standby):
    // its reads go on, and with no other copy of its sessions an open breaker would fail them too.
    const failures = handleWhen((err) => isBackendFailure(err) && !inner.refusesWrite?.(err));
    this.breaker = circuitBreaker(failures, {
      halfOpenAfter: options.halfOpenAfterMs,
      breaker: new ConsecutiveBreaker(options.breakerThreshold),
    });
    this.breaker.onStateChange((state) => {
      // Up only when closed: a half-open breaker is still probing, and the gauge must not flicker.
      if (state !== CircuitState.HalfOpen) observer.availability(this.backend, state === CircuitState.Closed);
      // cockatiel only half-opens on a call; without traffic to this backend nobody would call,
      // so a probe is scheduled: its success closes the breaker and sessions can move back.
      if (state === CircuitState.Open) this.scheduleProbe(options.halfOpenAfterMs);
    });
    this.timeoutMs = options.timeoutMs;
    this.outsideTimeoutMs = options.outsideTimeoutMs ?? options.timeoutMs;
    this.halfOpenAfterMs = options.halfOpenAfterMs;
  }

  get backend() {
    return this.inner.backend;
  }

  /**
   * True only while the breaker is closed. Open, callers skip straight to the fallback; half-open,
   * the breaker lets its one probe through and refuses every other call, so a session placed here
   * meanwhile would be refused and land in the fallback anyway — after the response had named
   * this backend as its destination.
   */
  get available(): boolean {
    return this.breaker.state === CircuitState.Closed;
  }

  /**
   * `available` for the session of `idHash`. On a partitioned store (a Redis Cluster) also the
   * partition that holds it must not have fallen silent of late: a timeout counted against it, no
   * answer from it since, within `halfOpenAfterMs`. The breaker, one per backend, stays closed
   * while the other partitions answer; without this each request of that partition's sessions
   * would try it again, a deadline's wait each time. After `halfOpenAfterMs` the next request
   * tries it (the partition's own half-open).
   */
  availableFor(idHash: string): boolean {
    if (!this.partitionOf || !this.available) return this.available;
    const partition = this.partitionOf(idHash);
    const liveness = partition === undefined ? undefined : this.partitions.get(partition);
    if (!liveness || liveness.lastAnswerAt >= liveness.countedTimeoutAt) return true;
    return performance.now() - liveness.countedTimeoutAt >= this.halfOpenAfterMs;
  }

  load(token: string) {
    return this.run('load', () => this.inner.load(token), this.partitionOf && this.livenessOf(hashSessionId(token)));
  }
  create(record: SessionRecord) {
    return this.run('save', () => this.inner.create(record), this.partitionOf && this.livenessOf(record.idHash));
  }
  moveIn(record: SessionRecord, readVersion: number) {
    return this.run('save', () => this.inner.moveIn(record, readVersion), this.partitionOf && this.livenessOf(record.idHash));
  }
  save(record: SessionRecord, expectedVersion?: number) {
    return this.run('save', () => this.inner.save(record, expectedVersion), this.partitionOf && this.livenessOf(record.idHash));
  }
  touch(record: SessionRecord) {
    return this.run('touch', () => this.inner.touch(record), this.partitionOf && this.livenessOf(record.idHash));
  }
  destroy(record: SessionRecord) {
    return this.run('destroy', () => this.inner.destroy(record), this.partitionOf && this.livenessOf(record.idHash));
  }
  evict(record: SessionRecord, unlessSealedPast?: number) {
    return this.run('destroy', () => this.inner.evict(record, unlessSealedPast), this.partitionOf && this.livenessOf(record.idHash));
  }
  /** Goes through the breaker, so while it is half-open a ping is the probe that closes it. */
  async ping(): Promise<void> {
    try {
      await this.breaker.execute(() => withDeadline(this.inner.ping(), this.timeoutMs, this.backend, this.liveness));
    } catch (caught) {
      const err = unwrapped(caught);
      if (!isBrokenCircuitError(err) && !(err instanceof StoreTimeoutError)) this.observer.probeFailed?.(this.backend, err);
      throw this.unavailable(err);
    }
  }
  /** Outside the breaker (SessionStore.writable): a backend that reads but does not write still serves reads. */
  async writable(): Promise<void> {
    if (!this.inner.writable) return;
    try {
      await withDeadline(this.inner.writable(), this.timeoutMs, this.backend, this.liveness);
    } catch (caught) {
      const err = unwrapped(caught);
      if (!(err instanceof StoreTimeoutError)) this.observer.probeFailed?.(this.backend, err);
      throw this.unavailable(err);
    }
  }
  /**
   * `work`, a call made on the store this guard wraps but not through the guard (the sessions
   * table as SessionBackends' directory), under its deadline (`outsideTimeoutMs`), judged as its own calls
   * are: a backend that answers other calls meanwhile, or a process too busy to have read the
   * answer, is waited for longer. Outside the breaker: an open one does not refuse the call, and
   * the call's failure is not counted by it (nor is the timeout counted as the guard's evidence
   * of a stall: its own calls in flight count theirs). A timeout fails as the guard's own do
   * (BackendUnavailableError, `timeout`); any other failure is passed on as the store raised it.
   * `operation`: what the call is counted as among the backend's operations (StoreObserver.outside),
   * so that a call let go at the deadline shows as the guard's own timeouts do; none for work whose
   * outcome is counted where it settles (a mirrored store's copies written behind).
   */
  bounded<T>(work: Promise<T>, operation?: StoreOperation): Promise<T> {
    const shared = this.liveness;
    const liveness: Liveness = {
      get lastAnswerAt() {
        return shared.lastAnswerAt;
      },
      set lastAnswerAt(at: number) {
        shared.lastAnswerAt = at;
      },
      countedTimeoutAt: -Infinity,
      countedErrorAt: -Infinity,
    };
    const counted = (outcome: 'success' | 'error' | 'timeout') => operation && this.observer.outside?.(this.backend, operation, outcome);
    return withDeadline(work, this.outsideTimeoutMs, this.backend, liveness).then(
      (value) => {
        counted('success');
        return value;
      },
      (err: unknown) => {
        if (!isCallerError(err)) counted(err instanceof StoreTimeoutError ? 'timeout' : 'error');
        throw err instanceof StoreTimeoutError ? this.unavailable(err) : err;
      },
    );
  }
  close() {
    this.closed = true;
    clearTimeout(this.probeTimer);
    return this.inner.close();
  }

  private readonly liveness: Liveness = { lastAnswerAt: -Infinity, countedTimeoutAt: -Infinity, countedErrorAt: -Infinity };
  /** Set when the inner store is Partitioned: each server's silence is judged apart. */
  private readonly partitionOf: ((idHash: string) => string | undefined) | undefined;
  private readonly partitions = new Map<string, Liveness>();

  private livenessOf(idHash: string): Liveness {
    const partition = this.partitionOf?.(idHash);
    if (partition === undefined) return this.liveness;
    let liveness = this.partitions.get(partition);
    if (!liveness) this.partitions.set(partition, (liveness = { lastAnswerAt: -Infinity, countedTimeoutAt: -Infinity, countedErrorAt: -Infinity }));
    return liveness;
  }
  private closed = false;
  private probeTimer: NodeJS.Timeout | undefined;
  private scheduleProbe(afterMs: number) {
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      if (!this.closed && !this.available) this.ping().catch(() => undefined);
    }, afterMs + 10);
    this.probeTimer.unref();
  }

  private async run<T>(operation: StoreOperation, fn: () => Promise<T>, liveness = this.liveness): Promise<T> {
    const started = performance.now();
    try {
      const result = await this.breaker.execute(() => withDeadline(fn(), this.timeoutMs, this.backend, liveness));
      this.observer.operation(this.backend, operation, 'success', (performance.now() - started) / 1000);
      return result;
    } catch (caught) {
      const err = unwrapped(caught);
      if (isCallerError(err)) throw err;
      if (!isBrokenCircuitError(err)) {
        const seconds = (performance.now() - started) / 1000;
        if (err instanceof StoreTimeoutError) this.observer.operation(this.backend, operation, 'timeout', seconds);
        else this.observer.operation(this.backend, operation, 'error', seconds, err);
      }
      throw this.unavailable(err);
    }
  }

  private unavailable(err: unknown) {
    if (isCallerError(err)) return err;
    const reason: FailureReason = isBrokenCircuitError(err) ? 'circuit_open' : err instanceof StoreTimeoutError ? 'timeout' : 'error';
    return new BackendUnavailableError(this.backend, reason, { cause: err });
  }
}

/**
 * The guard of a store that can list can list too (the constructor adds `listByUser` only
 * then); the cast states what TypeScript cannot infer for a class, as for RedisStore.
 */
export const GuardedStore = GuardedSessionStore as {
  new (inner: IndexedSessionStore, options: GuardOptions, observer: StoreObserver): GuardedSessionStore & SessionIndex;
  new (inner: SessionStore, options: GuardOptions, observer: StoreObserver): GuardedSessionStore;
};
export type GuardedStore = GuardedSessionStore;
