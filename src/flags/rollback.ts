/**
 * Automatic rollback. After sessions start moving from backend A to backend B, this watches
 * B over a sliding window; when B's error ratio passes ROLLBACK_ERROR_RATE, or B's p99 latency
 * passes ROLLBACK_LATENCY_FACTOR × A's (and ROLLBACK_LATENCY_FLOOR_MS: SQLite on a local disk
 * answers faster than any network hop, and a sub-10-ms p99 is no reason to undo a rollout), the instance sends B's sessions back to A and stays
 * there until an operator clears it (DELETE or PUT on the flag); every instance sharing its
 * database follows (`follow`, flags/override.ts). ROLLBACK_MIN_SAMPLES keeps a handful of slow
 * calls from flapping it.
 *
 * Latencies go into per-second buckets of a log-scale histogram (≈ 10 % resolution from
 * 10 µs to ~10 s), so recording is O(1) and a p99 over the window costs a few hundred adds.
 */
import type { BackendName } from '../config/config.js';
import type { RollbackTrigger } from '../metrics/metrics.js';

/** How long after an outage moves into the backend count as its sessions returning (`noteMigration`). */
export const RETURN_GRACE_MS = 10 * 60_000;
const BINS = 160;
const BASE_SECONDS = 1e-5;
const GROWTH = 1.1;

interface Second {
  at: number;
  total: number;
  errors: number;
  bins: Uint32Array;
}

class Window {
  private readonly seconds: Second[] = [];
  constructor(private readonly windowMs: number) {}

  record(ok: boolean, seconds: number, now: number) {
    const at = Math.floor(now / 1000);
    let last = this.seconds.at(-1);
    if (!last || last.at !== at) {
      last = { at, total: 0, errors: 0, bins: new Uint32Array(BINS) };
      this.seconds.push(last);
      this.trim(now);
    }
    last.total++;
    if (!ok) last.errors++;
    const bin = seconds <= BASE_SECONDS ? 0 : Math.min(BINS - 1, Math.ceil(Math.log(seconds / BASE_SECONDS) / Math.log(GROWTH)));
    last.bins[bin]!++;
  }

  summary(now: number) {
    this.trim(now);
    let total = 0;
    let errors = 0;
    const bins = new Uint32Array(BINS);
    for (const s of this.seconds) {
      total += s.total;
      errors += s.errors;
      for (let i = 0; i < BINS; i++) bins[i]! += s.bins[i]!;
    }
    let p99 = 0;
    if (total > 0) {
      let seen = 0;
      for (let i = 0; i < BINS; i++) {
        seen += bins[i]!;
        if (seen >= total * 0.99) {
          p99 = BASE_SECONDS * GROWTH ** i;
          break;
        }
      }
    }
    return { total, errors, errorRatio: total ? errors / total : 0, p99 };
  }

  private trim(now: number) {
    const oldest = Math.floor((now - this.windowMs) / 1000);
    while (this.seconds.length > 0 && this.seconds[0]!.at <= oldest) this.seconds.shift();
  }
}

export interface RollbackOptions {
  /** SESSION_FALLBACK: the backend sessions retreat to; a move to it is never undone for its latency. */
  fallback?: BackendName | 'none';
  enabled: boolean;
  errorRate: number;
  latencyFactor: number;
  latencyFloorMs: number;
  windowMs: number;
  minSamples: number;
}

export interface RollbackState {
  from: BackendName;
  to: BackendName;
  trigger: RollbackTrigger;
  at: number;
  errorRatio: number;
  p99Seconds: number;
  baselineP99Seconds: number;
}

export class RollbackGuard {
  private readonly windows = new Map<BackendName, Window>();
  /** The last p99 seen for each backend with enough samples: the baseline a newcomer is held to. */
  private readonly baselines = new Map<BackendName, number>();
  private move: { from: BackendName; to: BackendName } | undefined;
  private engaged: RollbackState | undefined;
  /** Whether `engaged` was decided elsewhere (or before a restart) and followed here. */
  private followed = false;
  /** When each backend last failed over to the fallback, or came back from an outage (see `noteMigration`). */
  private readonly outages = new Map<BackendName, number>();

  constructor(
    private readonly options: RollbackOptions,
    private readonly onRollback: (state: RollbackState) => void,
  ) {}

  get state(): RollbackState | undefined {
    return this.engaged;
  }

  /** True while a rollback this instance decided itself is engaged. */
  get decidedHere(): boolean {
    return this.engaged !== undefined && !this.followed;
  }

  /** The backend to use instead of `backend` while a rollback away from it is engaged. */
  redirect(backend: BackendName): BackendName {
    return this.engaged && this.engaged.from === backend ? this.engaged.to : backend;
  }

  /**
   * Sessions are moving from → to: `to` is now the backend on probation — unless `to` failed
   * over or came back from an outage on this instance within RETURN_GRACE_MS. Then these are
   * its own sessions going home from the fallback, lazily on their next requests, not a
   * rollout: held to the fallback's latency, a backend still warming up (or failing again)
   * would be rolled back for good, until an operator stepped in.
   */
  noteMigration(from: BackendName, to: BackendName, now = Date.now()) {
    const outage = this.outages.get(to);
    if (outage !== undefined && now - outage < RETURN_GRACE_MS) return;
    if (this.move?.from === from && this.move.to === to) return;
    this.move = { from, to };
    // Judged on what it does from now on: its samples from before (when it last served, or the
    // few calls a rollout's start makes) are no verdict on this move.
    this.windows.delete(to);
  }

  /** A request failed over from `backend` to the fallback (its breaker, a deadline, an error). */
  noteFallback(backend: BackendName, now = Date.now()) {
    this.outages.set(backend, now);
  }

  record(backend: BackendName, ok: boolean, seconds: number, now = Date.now()) {
    if (!this.options.enabled) return;
    let w = this.windows.get(backend);
    if (!w) this.windows.set(backend, (w = new Window(this.options.windowMs)));
    w.record(ok, seconds, now);
  }

  /** Called periodically (and by tests): decides whether to roll back. */
  evaluate(now = Date.now()): RollbackState | undefined {
    if (!this.options.enabled || this.engaged) return undefined;
    for (const [backend, w] of this.windows) {
      const s = w.summary(now);
      if (s.total >= this.options.minSamples && s.errors < s.total) this.baselines.set(backend, s.p99);
    }
    const move = this.move;
    if (!move) return undefined;
    const s = this.windows.get(move.to)?.summary(now);
    if (!s || s.total < this.options.minSamples) return undefined;
    // A sealed cookie opens in microseconds of CPU, with no round trip: it is no baseline for a
    // store's latency (a rollout from it to the database was rolled back on every busy instance),
    // nor is its own p99 a store's — it is the event loop's stalls on a busy instance, which a
    // rollback cannot cure (a rollout to it was rolled back with 99 % of its calls under 1 ms).
    // To or from the cookie backend, the error rate alone decides.
    // Nor is a retreat to the fallback undone for being slower than what it left: the fallback
    // is where sessions go when the others fail (an Unleash rollout taken back to 0 % was
    // rolled back to Redis by every busy instance). Its errors still count.
    const baseline = move.from === 'cookie' || move.to === 'cookie' || move.to === this.options.fallback ? undefined : this.baselines.get(move.from);
    let trigger: RollbackTrigger | undefined;
    if (s.errorRatio > this.options.errorRate) trigger = 'error_rate';
    else if (baseline !== undefined && baseline > 0 && s.p99 > baseline * this.options.latencyFactor && s.p99 * 1000 > this.options.latencyFloorMs) trigger = 'latency';
    if (!trigger) return undefined;
    this.engaged = { from: move.to, to: move.from, trigger, at: now, errorRatio: s.errorRatio, p99Seconds: s.p99, baselineP99Seconds: baseline ?? 0 };
    this.followed = false;
    this.onRollback(this.engaged);
    return this.engaged;
  }

  /**
   * A backend came back from an outage (its breaker closed): the outage was the breaker's and
   * the fallback's business, so its errors must not count against the backend's probation
   * when sessions move back to it. A rollout to it that the outage interrupted ends here too:
   * the sessions now moving back are going home (`noteMigration`), and its first calls after a
   * restart, slower while it warms up, rolled back instances it had just come back to.
   */
  forget(backend: BackendName, now = Date.now()) {
    this.windows.delete(backend);
    this.outages.set(backend, now);
    if (this.move?.to === backend) this.move = undefined;
  }

  /**
   * A rollback in force (flags/override.ts shares it): another instance's, or this one's own
   * read back after a restart. Followed unless one is already engaged here — also where
   * ROLLBACK_ENABLED is off, which only stops this instance deciding: instances that disagree
   * move the sessions they share back and forth. True when it was news.
   */
  follow(state: RollbackState): boolean {
    if (this.engaged) return false;
    this.engaged = state;
    this.followed = true;
    return true;
  }

  /** An operator cleared it: watch afresh (a flag change after an outage is a rollout again). */
  clear() {
    this.engaged = undefined;
    this.followed = false;
    this.move = undefined;
    this.windows.clear();
    this.outages.clear();
  }
}
