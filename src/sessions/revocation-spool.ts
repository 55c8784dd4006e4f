/**
 * Where a revocation waits while the database cannot take it.
 *
 * The revocation list lives in the database (revocations.ts): every instance loads it at start
 * and polls it. A logout or a "log out everybody" made while the database is down would
 * otherwise be honoured only in the memory of the instances that heard it, and undone by their
 * next restart. So the entry is held in Redis, in one hash that every instance reads with its
 * poll, until one of them has written it to the database (the instance that issued it also
 * keeps it in memory and writes it itself: see RevocationList.unwritten). An entry written
 * twice (two instances moving it at once) changes nothing.
 */
import type { Cluster, Redis } from 'ioredis';
import { isRevocationEntry, revocationKey, type RevocationEntry } from './revocations.js';

/**
 * Redis commands here fail rather than wait longer: a request waits on a hold, and every poll
 * of the revocation list on a read (a Redis that hangs would stall the poll).
 */
const REDIS_WAIT_MS = 1000;

export class RevocationSpool {
  /** `key`: one hash (one Cluster slot), named for this deployment like the instance channel. */
  constructor(
    private readonly redis: Redis | Cluster,
    private readonly key: string,
  ) {}

  async hold(entry: RevocationEntry): Promise<void> {
    await within(this.redis.hset(this.key, revocationKey(entry), JSON.stringify(entry)));
  }

  /** The entries waiting, expired ones included (the caller releases those). */
  async held(): Promise<RevocationEntry[]> {
    const fields = await within(this.redis.hgetall(this.key));
    const entries: RevocationEntry[] = [];
    for (const text of Object.values(fields)) {
      try {
        const entry: unknown = JSON.parse(text);
        if (isRevocationEntry(entry)) entries.push(entry);
      } catch {
        // Not ours to interpret: left for an operator, never applied.
      }
    }
    return entries;
  }

  async release(entry: RevocationEntry): Promise<void> {
    await within(this.redis.hdel(this.key, revocationKey(entry)));
  }
}

async function within<T>(command: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      command,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`redis did not answer within ${REDIS_WAIT_MS} ms`)), REDIS_WAIT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
