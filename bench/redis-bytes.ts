/**
 * Redis bytes per session and the cost of the Redis store's operations, for the Redis layout
 * (docs/performance.md, "Redis bytes per session"; issue 6's target: ≤ 50 % of connect-redis's
 * 424 B, so ≤ 212 B).
 *
 *   node --import tsx bench/redis-bytes.ts                   bytes only
 *   node --import tsx bench/redis-bytes.ts --compare HEAD    also the store of a git revision:
 *                                                            its bytes, and load/save/touch timed
 *                                                            against it, interleaved
 *
 * Stores one session with the benchmark's login content (user 123, a 22-character CSRF token,
 * platformId null, the load generator's 101-character User-Agent, a 15-character key prefix) and
 * prints `MEMORY USAGE <key> SAMPLES 0` of each key it made. With --compare, the other revision's
 * src/sessions/redis-store.ts is copied to a temporary directory (its imports pointed back at this
 * tree) and both stores run --loads loads, --saves saves (with an expected version, as the app
 * saves) and --touches touches, one at a time, in --rounds alternating rounds. Reported per
 * operation: wall µs, this process's CPU µs, Redis's CPU µs (INFO cpu), and the commands sent
 * (counted by MONITOR in a separate short pass, a script counting as one).
 *
 * Options: --redis-url (default: a private redis-server on a free port, pinned to --redis-cpu,
 * default the last CPU), --compare REV, --loads 20000, --saves 5000, --touches 5000, --rounds 4.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisStore } from '../src/sessions/redis-store.js';
import { hashSessionId, newHandle, newSessionId, type SessionRecord } from '../src/sessions/session.js';
import type { SessionStore } from '../src/sessions/store.js';
import { memoryByPrefix, startRedis } from './lib/redis.js';
import { USER_AGENT } from './lib/targets.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const IDLE_MS = 7_200_000;
const ABSOLUTE_MS = 86_400_000;

const argv = process.argv.slice(2);
function opt(name: string, fallback: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}
const compareRev = opt('compare', '');
const counts = { load: Number(opt('loads', '20000')), save: Number(opt('saves', '5000')), touch: Number(opt('touches', '5000')) };
const rounds = Number(opt('rounds', '4'));

/** What a bench login stores (src/http/session-middleware.ts), for user 123. */
function benchSession(): SessionRecord {
  const now = Date.now();
  const id = newSessionId();
  return {
    id,
    idHash: hashSessionId(id),
    handle: newHandle(),
    userId: 123,
    backend: 'redis',
    data: { csrfToken: newHandle(), user: { id: 123, email: 'bench-user-123@example.com', name: 'Bench User 123', role: 'user' }, platformId: null },
    createdAt: now,
    issuedAt: now,
    lastActivity: now,
    expiresAt: now + IDLE_MS,
    absoluteExpiresAt: now + ABSOLUTE_MS,
    ip: '127.0.0.1',
    userAgent: USER_AGENT,
    version: 1,
  };
}

/** Fifteen characters, as the benchmark's prefixes (bench/lib/targets.ts). */
const newPrefix = () => `rb${randomBytes(6).toString('hex')}:`;

type StoreConstructor = new (redis: Redis, options: { keyPrefix: string; absoluteTimeoutMs: number; userIndex?: boolean }) => SessionStore;

/** The store of another revision, runnable from a temporary copy whose imports lead back here. */
async function storeAt(rev: string, tmp: string): Promise<StoreConstructor> {
  const source = execFileSync('git', ['show', `${rev}:src/sessions/redis-store.ts`], { cwd: ROOT, encoding: 'utf8' })
    .replaceAll("from './", `from '${ROOT}/src/sessions/`)
    .replaceAll("from '../", `from '${ROOT}/src/`);
  const file = path.join(tmp, 'redis-store.ts');
  writeFileSync(file, source);
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(tmp, 'node_modules'));
  return ((await import(pathToFileURL(file).href)) as { RedisStore: StoreConstructor }).RedisStore;
}

/** The server's CPU time so far (main thread and the rest), µs. */
async function redisCpuUs(admin: Redis): Promise<number> {
  const info = await admin.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? NaN);
  return (field('used_cpu_sys') + field('used_cpu_user')) * 1e6;
}

interface Cost {
  ops: number;
  wallUs: number;
  cpuUs: number;
  redisUs: number;
}
const noCost = (): Cost => ({ ops: 0, wallUs: 0, cpuUs: 0, redisUs: 0 });

async function measure(admin: Redis, cost: Cost, n: number, op: (i: number) => Promise<unknown>) {
  const redis0 = await redisCpuUs(admin);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await op(i);
  const wall = Number(process.hrtime.bigint() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  cost.redisUs += (await redisCpuUs(admin)) - redis0;
  cost.ops += n;
  cost.wallUs += wall;
  cost.cpuUs += cpu.user + cpu.system;
}

/** Commands the client sent per operation; those a script runs inside Redis are not sent. */
async function commandsPerOp(url: string, n: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const base = new Redis(url);
  const monitor = await base.monitor();
  let sent = 0;
  monitor.on('monitor', (_time: string, _args: string[], source: string) => {
    if (source !== 'lua') sent++;
  });
  for (let i = 0; i < n; i++) await op(i);
  // MONITOR's feed trails the replies: wait until it has stopped growing.
  for (let seen = -1; seen !== sent; ) {
    seen = sent;
    await new Promise((r) => setTimeout(r, 100));
  }
  monitor.disconnect();
  base.disconnect();
  return sent / n;
}

async function main() {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sb-redis-bytes-'));
  const redis = await startRedis({ url: opt('redis-url', '') || undefined, cpu: opt('redis-cpu', String(os.cpus().length - 1)), dir: tmp });
  const prefixes: string[] = [];
  const client = (name: string) => {
    const c = new Redis(redis.url, { enableAutoPipelining: true, connectionName: name });
    c.on('error', () => {});
    return c;
  };
  const clients: Redis[] = [];
  try {
    const variants: Array<{ label: string; make: (c: Redis, keyPrefix: string) => SessionStore }> = [
      { label: 'this tree, userIndex: false (as the app runs it)', make: (c, keyPrefix) => new RedisStore(c, { keyPrefix, absoluteTimeoutMs: ABSOLUTE_MS, userIndex: false }) },
      { label: 'this tree, with the user index (the default)', make: (c, keyPrefix) => new RedisStore(c, { keyPrefix, absoluteTimeoutMs: ABSOLUTE_MS }) },
    ];
    if (compareRev) {
      const Old = await storeAt(compareRev, tmp);
      variants.push({ label: `${compareRev}`, make: (c, keyPrefix) => new Old(c, { keyPrefix, absoluteTimeoutMs: ABSOLUTE_MS }) });
    }

    console.log(`Redis bytes per session (MEMORY USAGE … SAMPLES 0; goal ≤ 212 B, connect-redis 424 B), prefix of ${newPrefix().length} characters:`);
    for (const v of variants) {
      const prefix = newPrefix();
      prefixes.push(prefix);
      const c = client(v.label);
      clients.push(c);
      await v.make(c, prefix).create(benchSession());
      const keys = await memoryByPrefix(redis.client, prefix);
      const total = keys.reduce((a, k) => a + k.bytes, 0);
      console.log(`  ${v.label}: ${total} B`);
      for (const k of keys) console.log(`    ${k.key.slice(0, 2)}…  ${k.type}, ${k.bytes} B (value ${k.payload} B)`);
    }

    if (!compareRev) return;
    const timed = [variants[0]!, variants[2]!];
    const ops = ['load', 'save', 'touch'] as const;
    const setups = timed.map((v) => {
      const prefix = newPrefix();
      prefixes.push(prefix);
      const c = client(`timed ${v.label}`);
      clients.push(c);
      const store = v.make(c, prefix);
      const record = benchSession();
      const run: Record<(typeof ops)[number], (i: number) => Promise<unknown>> = {
        load: () => store.load(record.id),
        // As the app saves: over the version it read.
        save: async (i) => {
          const next = { ...record, version: record.version + 1, data: { ...record.data, platformId: i % 7 } };
          await store.save(next, record.version);
          Object.assign(record, next);
        },
        touch: () => store.touch({ ...record, lastActivity: Date.now(), expiresAt: Date.now() + IDLE_MS }),
      };
      return { store, record, run };
    });
    for (const s of setups) await s.store.create(s.record);
    // Warm-up, so that neither pays for JIT or a script's first NOSCRIPT in the measurement.
    for (const s of setups) for (const op of ops) for (let i = 0; i < 500; i++) await s.run[op](i);
    const costs = setups.map(() => ({ load: noCost(), save: noCost(), touch: noCost() }));
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < setups.length; k++) {
        const j = (k + round) % setups.length;
        for (const op of ops) await measure(redis.client, costs[j]![op], Math.round(counts[op] / rounds), setups[j]!.run[op]);
      }
    }
    const sent: Array<Record<string, number>> = [];
    for (const s of setups) {
      const perOp: Record<string, number> = {};
      for (const op of ops) perOp[op] = await commandsPerOp(redis.url, 200, s.run[op]);
      sent.push(perOp);
    }
    console.log(`\nPer operation, one at a time (${rounds} interleaved rounds; wall includes the round trip):`);
    console.log('  store | op | n | wall µs | client CPU µs | Redis CPU µs | commands sent');
    timed.forEach((v, j) => {
      for (const op of ops) {
        const c = costs[j]![op];
        console.log(`  ${v.label} | ${op} | ${c.ops} | ${(c.wallUs / c.ops).toFixed(1)} | ${(c.cpuUs / c.ops).toFixed(1)} | ${(c.redisUs / c.ops).toFixed(1)} | ${sent[j]![op]!.toFixed(2)}`);
      }
    });
    console.log('\n  ratio this tree ÷ ' + compareRev + ' (wall, client CPU, Redis CPU):');
    for (const op of ops) {
      const [a, b] = [costs[0]![op], costs[1]![op]];
      const r = (x: number, y: number) => `${(x / a.ops / (y / b.ops)).toFixed(2)}×`;
      console.log(`    ${op}: ${r(a.wallUs, b.wallUs)}, ${r(a.cpuUs, b.cpuUs)}, ${r(a.redisUs, b.redisUs)}`);
    }
  } finally {
    for (const c of clients) c.disconnect();
    await redis.close(prefixes);
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
