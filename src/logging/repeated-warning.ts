/**
 * A warning that can come once per request during an outage (a database copy that could not
 * be written, say) is logged once per interval: the first with its error, then at most one
 * line per interval saying how many were left out since. An operator grepping for the message
 * finds the outage and its size, not thousands of identical stacks. The metrics still count
 * every one.
 */
import type { Logger } from 'pino';

export const REPEATED_WARNING_INTERVAL_MS = 10_000;

export class RepeatedWarning {
  private lastLoggedAt = -Infinity;
  private leftOut = 0;

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
    private readonly intervalMs = REPEATED_WARNING_INTERVAL_MS,
  ) {}

  warn(fields: Record<string, unknown>, now = Date.now()): void {
    if (now - this.lastLoggedAt < this.intervalMs) {
      this.leftOut++;
      return;
    }
    const leftOut = this.leftOut;
    this.lastLoggedAt = now;
    this.leftOut = 0;
    this.logger.warn(leftOut > 0 ? { ...fields, alsoSinceLastLine: leftOut } : fields, this.message);
  }
}
