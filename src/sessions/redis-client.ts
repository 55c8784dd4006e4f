/**
 * The ioredis client for REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES. Commands fail fast
 * while disconnected (no offline queue, one retry) so the circuit breaker and the fallback see
 * an outage at once instead of requests waiting on a queue; reconnection goes on in the background.
 */
import { Redis, Cluster } from 'ioredis';
import type { RedisConnection } from '../config/config.js';

const retryStrategy = (times: number) => Math.min(100 * times, 1000);

export function createRedisClient(c: RedisConnection): Redis | Cluster {
  // No auto-pipelining: ioredis keeps one auto-pipeline in flight per connection and queues
  // every command issued meanwhile into the next, so under load each command waits for the
  // round trip ahead of it as well as its own, and one slow answer holds up everything behind
  // it. Measured side by side (docs/performance.md, fourth round): the session-writing request's
  // p99 halves without it, for about 4 % more CPU per request.
  const common = { enableOfflineQueue: false, maxRetriesPerRequest: 1, enableAutoPipelining: false, connectTimeout: 1000 } as const;
  if (c.cluster?.length) {
    const url = new URL(c.url);
    return new Cluster(c.cluster, {
      ...common,
      clusterRetryStrategy: retryStrategy,
      redisOptions: { password: url.password || undefined, username: url.username || undefined, tls: url.protocol === 'rediss:' ? {} : undefined },
    });
  }
  if (c.sentinels?.length) {
    const url = new URL(c.url);
    return new Redis({ ...common, retryStrategy, sentinels: c.sentinels, name: c.sentinelName, password: url.password || undefined, db: Number(url.pathname.slice(1) || 0) });
  }
  return new Redis(c.url, { ...common, retryStrategy });
}

/** Waits for the first connection, at most `ms`; start-up goes on either way (Redis may come later). */
export async function waitForRedis(client: Redis | Cluster, ms: number): Promise<boolean> {
  if (client.status === 'ready') return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(false), ms);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    client.once('ready', onReady);
  });
}
