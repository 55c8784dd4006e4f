/**
 * The Redis every Redis-backed target shares: by default a private redis-server started for
 * the run (persistence off, pinned to the load-generator CPU), or the one at --redis-url.
 * Keys of a run live under run-unique prefixes and are deleted at the end either way.
 */
import { Redis } from 'ioredis';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { lastLines, spawnPinned, stop, type Child } from './processes.js';

export interface BenchRedis {
  url: string;
  client: Redis;
  child?: Child;
  close(prefixes: string[]): Promise<void>;
  /** The private redis-server frozen for `ms` (SIGSTOP, then SIGCONT): connections stay open, nothing answers. */
  stall(ms: number): Promise<void>;
  /** The private redis-server killed, and an empty one started on its port `downMs` later: a Redis that restarted and kept nothing. */
  restart(downMs: number): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function startRedis(opts: { url?: string; cpu: string; dir: string }): Promise<BenchRedis> {
  let url = opts.url;
  let child: Child | undefined;
  let port = 0;
  const spawn = () =>
    spawnPinned('redis-server', opts.cpu, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', opts.dir, '--daemonize', 'no'], {
      log: path.join(opts.dir, 'redis.log'),
    });
  if (!url) {
    port = await freePort();
    child = spawn();
    url = `redis://127.0.0.1:${port}/0`;
  }
  const own = () => {
    if (!child) throw new Error('a Redis fault needs the private redis-server (not --redis-url)');
    return child;
  };
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  client.on('error', () => {});
  for (let i = 0; ; i++) {
    try {
      await client.connect();
      await client.ping();
      break;
    } catch (err) {
      if (i >= 100) throw new Error(`redis at ${url} did not answer: ${(err as Error).message}\n${child ? lastLines(child.log) : ''}`);
      client.disconnect();
      await sleep(100);
    }
  }
  return {
    url,
    client,
    get child() {
      return child;
    },
    async close(prefixes) {
      // After a restart the keys are gone already; a Redis that does not answer has none to delete.
      for (const prefix of prefixes) await deleteByPrefix(client, prefix).catch(() => 0);
      client.disconnect();
      if (child) await stop(child);
    },
    async stall(ms) {
      const frozen = own();
      frozen.proc.kill('SIGSTOP');
      try {
        await sleep(ms);
      } finally {
        frozen.proc.kill('SIGCONT');
      }
    },
    async restart(downMs) {
      const old = own();
      old.proc.kill('SIGKILL');
      await old.exited;
      await sleep(downMs);
      // The port is free again at once (redis-server listens with SO_REUSEADDR); a start that
      // exits at once found it taken all the same, and is tried again.
      for (let tries = 0; ; tries++) {
        child = spawn();
        await sleep(50);
        if (child.proc.exitCode === null) return;
        if (tries >= 20) throw new Error(`redis-server did not start again on port ${port}:\n${lastLines(child.log)}`);
        await sleep(100);
      }
    },
  };
}

export async function keysByPrefix(client: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

export async function deleteByPrefix(client: Redis, prefix: string): Promise<number> {
  const keys = await keysByPrefix(client, prefix);
  for (let i = 0; i < keys.length; i += 500) await client.unlink(...keys.slice(i, i + 500));
  return keys.length;
}

export interface KeyUsage {
  key: string;
  type: string;
  bytes: number;
  /** Length of the stored value: string length, or the sum of hash field names and values, or zset members. */
  payload: number;
}

/** MEMORY USAGE (exact: SAMPLES 0) of every key under `prefix`. */
export async function memoryByPrefix(client: Redis, prefix: string): Promise<KeyUsage[]> {
  const out: KeyUsage[] = [];
  for (const key of await keysByPrefix(client, prefix)) {
    const type = await client.type(key);
    const bytes = Number(await client.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
    let payload = 0;
    if (type === 'string') payload = await client.strlen(key);
    else if (type === 'hash') for (const [f, v] of Object.entries(await client.hgetall(key))) payload += f.length + v.length;
    else if (type === 'zset') for (const m of await client.zrange(key, 0, -1)) payload += m.length;
    out.push({ key: key.slice(prefix.length), type, bytes, payload });
  }
  return out;
}
