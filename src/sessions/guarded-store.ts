/**
 * A store behind a deadline and a circuit breaker (cockatiel), with every operation timed and
 * counted. While the breaker is open, calls fail at once with `BackendUnavailableError`, so
 * the caller can serve from the fallback without waiting on timeouts; after
 * `halfOpenAfterMs` one call is let through as a probe, and its success closes the breaker.
 */
import {
  CircuitState,
  ConsecutiveBreaker,
  TimeoutStrategy,
  circuitBreaker,
  handleWhen,
  isBrokenCircuitError,
  TaskCancelledError,
  timeout,
  wrap,
  type IPolicy,
} from 'cockatiel';
import type { StoreOperation } from '../metrics/metrics.js';
import { SessionConflictError, SessionTooLargeError } from './errors.js';

const isCallerError = (err: unknown) => err instanceof SessionTooLargeError || err instanceof SessionConflictError;
import type { SessionRecord } from './session.js';
import { isIndexed, type IndexedSessionStore, type SessionStore } from './store.js';

export type FailureReason = 'error' | 'timeout' | 'circuit_open';

/** The backend could not serve: failed, too slow, or its breaker is open. */
export class BackendUnavailableError extends Error {
  override name = 'BackendUnavailableError';
  constructor(
    readonly backend: string,
    readonly reason: FailureReason,
    options?: { cause?: unknown },
  ) {
    super(`session backend ${backend} unavailable (${reason})`, options);
  }
}

export interface StoreObserver {
  operation(backend: string, operation: StoreOperation, outcome: 'success' | 'error' | 'timeout', seconds: number): void;
  availability(backend: string, up: boolean): void;
}

export interface GuardOptions {
  timeoutMs: number;
  breakerThreshold: number;
  halfOpenAfterMs: number;
}

export class GuardedStore implements IndexedSessionStore {
  private readonly policy: IPolicy;
  private readonly breaker;

  constructor(
    readonly inner: SessionStore,
    options: GuardOptions,
    private readonly observer: StoreObserver,
  ) {
    // A session too large for its backend, or saved meanwhile by another request, is the
    // caller's to handle: the backend itself is fine.
    const failures = handleWhen((err) => !isCallerError(err));
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
    // abortOnReturn off: our stores take no AbortSignal, and aborting one per call costs more than the call.
    this.policy = wrap(this.breaker, timeout(options.timeoutMs, { strategy: TimeoutStrategy.Aggressive, abortOnReturn: false }));
  }

  get backend() {
    return this.inner.backend;
  }

  /** False while the breaker is open: callers skip straight to the fallback. */
  get available(): boolean {
    return this.breaker.state !== CircuitState.Open && this.breaker.state !== CircuitState.Isolated;
  }

  load(token: string) {
    return this.run('load', () => this.inner.load(token));
  }
  create(record: SessionRecord) {
    return this.run('save', () => this.inner.create(record));
  }
  save(record: SessionRecord, expectedVersion?: number) {
    return this.run('save', () => this.inner.save(record, expectedVersion));
  }
  touch(record: SessionRecord) {
    return this.run('touch', () => this.inner.touch(record));
  }
  destroy(record: SessionRecord) {
    return this.run('destroy', () => this.inner.destroy(record));
  }
  evict(record: SessionRecord) {
    return this.run('destroy', () => this.inner.evict(record));
  }
  listByUser(userId: number) {
    const inner = this.inner;
    if (!isIndexed(inner)) return Promise.resolve([]);
    return this.run('list', () => inner.listByUser(userId));
  }
  /** Goes through the breaker, so while it is half-open a ping is the probe that closes it. */
  async ping(): Promise<void> {
    try {
      await this.policy.execute(() => this.inner.ping());
    } catch (err) {
      throw this.unavailable(err);
    }
  }
  close() {
    this.closed = true;
    clearTimeout(this.probeTimer);
    return this.inner.close();
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

  // instanceof, not cockatiel's isTaskCancelledError: in 3.2.1 that guard tests for the bulkhead
  // error's marker and never recognises a timeout.
  private async run<T>(operation: StoreOperation, fn: () => Promise<T>): Promise<T> {
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      const result = await this.policy.execute(fn);
      this.observer.operation(this.backend, operation, 'success', seconds());
      return result;
    } catch (err) {
      if (isCallerError(err)) throw err;
      if (!isBrokenCircuitError(err)) {
        this.observer.operation(this.backend, operation, err instanceof TaskCancelledError ? 'timeout' : 'error', seconds());
      }
      throw this.unavailable(err);
    }
  }

  private unavailable(err: unknown) {
    if (isCallerError(err)) return err;
    const reason: FailureReason = isBrokenCircuitError(err) ? 'circuit_open' : err instanceof TaskCancelledError ? 'timeout' : 'error';
    return new BackendUnavailableError(this.backend, reason, { cause: err });
  }
}
