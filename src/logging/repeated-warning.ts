/**
 * A warning that can come once per request during an outage (a database copy that could not
 * be written, say) is logged once per interval: the first with its error, then at most one
 * line per interval saying how many were left out since. An operator grepping for the message
 * finds the outage and its size, not thousands of identical stacks. The metrics still count
 * every one.
 *
 * The ones left out at the end of an outage are told one interval after the last line, not on
 * the first line of the next outage, minutes later and about something else.
 *
 * Intervals are timed on the monotonic clock: after the system clock steps back (an NTP step, a
 * VM restored), a wall-clock interval would stay "not yet over" for as long as the step.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';

export const REPEATED_WARNING_INTERVAL_MS = 10_000;

export class RepeatedWarning {
  private lastLoggedAt = -Infinity;
  private leftOut = 0;
  private lastLeftOut: Record<string, unknown> = {};
  /** When the last one left out happened (wall clock, for the reader of the log). */
  private lastLeftOutAt = 0;
  private pending: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
    private readonly intervalMs = REPEATED_WARNING_INTERVAL_MS,
  ) {}

  warn(fields: Record<string, unknown>, now = performance.now()): void {
    if (now - this.lastLoggedAt < this.intervalMs) {
      this.leftOut++;
      this.lastLeftOut = fields;
      this.lastLeftOutAt = Date.now();
      this.pending ??= setTimeout(() => this.tellLeftOut(), this.lastLoggedAt + this.intervalMs - now);
      this.pending.unref();
      return;
    }
    this.log(fields, now);
  }

  private log(fields: Record<string, unknown>, now: number) {
    const leftOut = this.leftOut;
    clearTimeout(this.pending);
    this.pending = undefined;
    this.lastLoggedAt = now;
    this.leftOut = 0;
    this.logger.warn(leftOut > 0 ? { ...fields, alsoSinceLastLine: leftOut } : fields, this.message);
  }

  /**
   * The last of those left out stands for them all, with when it happened: written an interval
   * later, after the backend may have recovered, its error would otherwise read as fresh.
   */
  private tellLeftOut() {
    this.pending = undefined;
    if (this.leftOut === 0) return;
    const fields = { ...this.lastLeftOut, lastAt: new Date(this.lastLeftOutAt).toISOString() };
    this.leftOut--;
    this.log(fields, performance.now());
  }
}
