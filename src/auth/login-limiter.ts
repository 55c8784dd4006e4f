/**
 * Login rate limiting (rate-limiter-flexible): failed attempts are counted per account+address,
 * per address, and per account from all addresses (a higher limit: guessing spread over many
 * addresses); past any limit, attempts get 429 with Retry-After until the window ends. A success
 * clears the account+address counter. Counters live in this process's memory: each instance
 * limits on its own (README, "Limits").
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { TooManyAttemptsError } from '../http/errors.js';

export class LoginLimiter {
  private readonly perAccount: RateLimiterMemory;
  private readonly perAddress: RateLimiterMemory;
  private readonly perAccountEverywhere: RateLimiterMemory;

  constructor(options: { maxFailures: number; maxFailuresPerIp: number; maxFailuresPerAccount: number; windowSeconds: number }) {
    const limit = (points: number) => new RateLimiterMemory({ points, duration: options.windowSeconds, blockDuration: options.windowSeconds });
    this.perAccount = limit(options.maxFailures);
    this.perAddress = limit(options.maxFailuresPerIp);
    this.perAccountEverywhere = limit(options.maxFailuresPerAccount);
  }

  /** Throws TooManyAttemptsError when any counter is spent. */
  async check(account: string, ip: string): Promise<void> {
    const counts = await Promise.all([this.perAccount.get(this.key(account, ip)), this.perAddress.get(ip), this.perAccountEverywhere.get(account.toLowerCase())]);
    const blocked = counts.filter((r): r is RateLimiterRes => r !== null && r.remainingPoints <= 0);
    if (blocked.length > 0) throw new TooManyAttemptsError(Math.max(1, ...blocked.map((r) => Math.ceil(r.msBeforeNext / 1000))));
  }

  async failed(account: string, ip: string): Promise<void> {
    await Promise.all([this.perAccount.penalty(this.key(account, ip), 1), this.perAddress.penalty(ip, 1), this.perAccountEverywhere.penalty(account.toLowerCase(), 1)]);
  }

  async succeeded(account: string, ip: string): Promise<void> {
    await this.perAccount.delete(this.key(account, ip));
  }

  private key(account: string, ip: string) {
    return `${account.toLowerCase()}|${ip}`;
  }
}
