/**
 * Login rate limiting (rate-limiter-flexible): failed attempts are counted per account+address,
 * per address, and per account from all addresses (a higher limit: guessing spread over many
 * addresses); past any limit, attempts get 429 with Retry-After until the window ends. A success
 * clears the account+address counter. Counters live in this process's memory: each instance
 * limits on its own (README, "Limits").
 *
 * An attempt holds a point of each counter while its password is checked, and gives it back if
 * the password was right. Counting only what has failed let a burst sent at once all pass the
 * check before the first failure was counted: 40 logins at once, 39 wrong and the right one
 * last, all got their guess with a limit of 10. Attempts beyond the points left wait for one in
 * flight to end rather than being refused, so a burst of right passwords (a user's tabs, a
 * script's workers) all get in, one batch after another.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { TooManyAttemptsError } from '../http/errors.js';

/** An attempt that waited this long for a point held by attempts in flight is refused (429). */
const ATTEMPT_WAIT_MS = 10_000;

interface Counter {
  name: string;
  limiter: RateLimiterMemory;
  points: number;
}

/** One login (or password check) holding its points: end it with `failed`, `succeeded` or `release`. */
export interface LoginAttempt {
  /** Counts the attempt as a failure against every counter. */
  failed(): Promise<void>;
  /** Gives the points back and clears the account+address counter. */
  succeeded(): Promise<void>;
  /** Gives the points back, counting nothing (the check could not be made: 503). A no-op once ended. */
  release(): void;
}

export class LoginLimiter {
  private readonly perAccount: Counter;
  private readonly perAddress: Counter;
  private readonly perAccountEverywhere: Counter;
  /** Points held by attempts in flight, by counter and key. */
  private readonly held = new Map<string, number>();
  /** Attempts waiting for a held point to come back. */
  private waiting: Array<() => void> = [];
  /** Reading the counters and taking points happen one attempt at a time (see `reserve`). */
  private turn: Promise<unknown> = Promise.resolve();
  private readonly attemptWaitMs: number;

  constructor(options: { maxFailures: number; maxFailuresPerIp: number; maxFailuresPerAccount: number; windowSeconds: number; attemptWaitMs?: number }) {
    this.attemptWaitMs = options.attemptWaitMs ?? ATTEMPT_WAIT_MS;
    const counter = (name: string, points: number): Counter => ({
      name,
      points,
      limiter: new RateLimiterMemory({ points, duration: options.windowSeconds, blockDuration: options.windowSeconds }),
    });
    this.perAccount = counter('account+address', options.maxFailures);
    this.perAddress = counter('address', options.maxFailuresPerIp);
    this.perAccountEverywhere = counter('account', options.maxFailuresPerAccount);
  }

  /**
   * Takes a point of each counter for one attempt. Throws TooManyAttemptsError when a counter is
   * spent by failures; waits while attempts in flight hold the points left.
   */
  async attempt(account: string, ip: string): Promise<LoginAttempt> {
    const keys: Array<[Counter, string]> = [
      [this.perAccount, accountAt(account, ip)],
      [this.perAddress, ip],
      [this.perAccountEverywhere, account.toLowerCase()],
    ];
    const deadline = Date.now() + this.attemptWaitMs;
    while (!(await this.inTurn(() => this.reserve(keys)))) {
      const left = deadline - Date.now();
      if (left <= 0) throw new TooManyAttemptsError(1);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiting.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    let ended = false;
    const end = () => {
      if (ended) return false;
      ended = true;
      for (const [c, key] of keys) this.take(c, key, -1);
      const waiting = this.waiting;
      this.waiting = [];
      for (const wake of waiting) wake();
      return true;
    };
    return {
      // The failure is counted before the point is given back, in the same turn, so no waiting
      // attempt reads the counters between the two.
      failed: () =>
        this.inTurn(async () => {
          if (!ended) await Promise.all(keys.map(([c, key]) => c.limiter.penalty(key, 1)));
          end();
        }),
      // Cleared before the point is given back, so a waiting attempt reads the cleared counter.
      succeeded: async () => {
        if (ended) return;
        await this.clearFailures(account, ip);
        end();
      },
      release: () => void end(),
    };
  }

  /** A right password: the failures counted against this account from this address are forgotten. */
  async clearFailures(account: string, ip: string): Promise<void> {
    await this.perAccount.limiter.delete(accountAt(account, ip));
  }

  /** True when the points were taken; false when attempts in flight hold what is left. */
  private async reserve(keys: Array<[Counter, string]>): Promise<boolean> {
    const counts = await Promise.all(keys.map(([c, key]) => c.limiter.get(key)));
    const blocked = counts.filter((r): r is RateLimiterRes => r !== null && r.remainingPoints <= 0);
    if (blocked.length > 0) throw new TooManyAttemptsError(Math.max(1, ...blocked.map((r) => Math.ceil(r.msBeforeNext / 1000))));
    const full = keys.some(([c, key], i) => (counts[i]?.consumedPoints ?? 0) + this.heldBy(c, key) >= c.points);
    if (full) return false;
    for (const [c, key] of keys) this.take(c, key, 1);
    return true;
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const run = this.turn.then(work);
    this.turn = run.catch(() => undefined);
    return run;
  }

  private heldBy(c: Counter, key: string): number {
    return this.held.get(`${c.name}\n${key}`) ?? 0;
  }

  private take(c: Counter, key: string, points: number) {
    const id = `${c.name}\n${key}`;
    const now = (this.held.get(id) ?? 0) + points;
    if (now > 0) this.held.set(id, now);
    else this.held.delete(id);
  }
}

/** The key of the account+address counter: an email in any letter case is one account. */
function accountAt(account: string, ip: string): string {
  return `${account.toLowerCase()}|${ip}`;
}
