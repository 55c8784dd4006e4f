/**
 * Built servers a bench runs against (dist/src/server.js of this checkout or another one,
 * production mode, on a free port of 127.0.0.1) and what they need that the bench creates: a
 * private redis-server, fresh PostgreSQL databases (test/support/postgres.ts), Redis key
 * prefixes, a directory for their data and logs. All of it goes at the end — and on SIGINT,
 * SIGTERM or the bench's time bound running out, so that a hung or interrupted run leaves no
 * server, database or key behind.
 *
 * BENCH_DB_PREFIX, when set, begins the databases' names instead of the bench's own prefix:
 * runs of several people on one PostgreSQL can then tell theirs apart (every name also ends in
 * the pid and a random part).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { lastLines, spawnPinned, stop, stopAll, type Child } from './processes.js';
import { freePort, startRedis, type BenchRedis } from './redis.js';
import { createTestDatabase, type TestDatabase } from '../../test/support/postgres.js';

/** This checkout. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/**
 * Servers, Redis and the load share every CPU, unpinned: the benches that use this measure races,
 * and pinning would change their timing from what the project's earlier runs measured.
 */
const ALL_CPUS = `0-${os.cpus().length - 1}`;

export interface Instance {
  name: string;
  base: string;
  child: Child;
}

/** `npm run build` in `root` (this checkout by default); throws if it fails. */
export function buildServer(root = ROOT): void {
  if (spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' }).status !== 0) throw new Error(`npm run build failed in ${root}`);
}

/** /readyz's status and the start of its body, or why it did not answer. */
export async function readyz(base: string): Promise<string> {
  try {
    const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5000) });
    return `${res.status} ${(await res.text()).slice(0, 300)}`;
  } catch (err) {
    return (err as Error).message;
  }
}

export class BenchServers {
  /** The servers' data directories and logs, removed at the end unless `keepLogs`. */
  readonly dir: string;
  private redis: BenchRedis | undefined;
  private readonly databases = new Set<TestDatabase>();
  private readonly prefixes: string[] = [];
  private readonly instances = new Set<Child>();
  private cleaning: Promise<void> | undefined;

  /** Stops everything on SIGINT and SIGTERM (exit 130) from here on. */
  constructor(
    name: string,
    private readonly keepLogs: boolean,
  ) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), `switchboard-${name}-`));
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        console.error(`\n${signal}: stopping`);
        void this.cleanup().finally(() => process.exit(130));
      });
    }
  }

  /**
   * Stops everything and exits 2 after `seconds`: signups, server starts and databases come on
   * top of the load, and any of them can hang.
   */
  boundTime(seconds: number): void {
    const timer = setTimeout(() => {
      console.error(`\nexceeded its time bound (${seconds} s): stopping`);
      void this.cleanup().finally(() => process.exit(2));
    }, seconds * 1000);
    timer.unref();
  }

  /** The private redis-server every server of the bench shares. */
  async startRedis(): Promise<string> {
    this.redis ??= await startRedis({ cpu: ALL_CPUS, dir: this.dir });
    return this.redis.url;
  }

  /**
   * The private redis-server failing for `ms`: frozen (`stall`: nothing answers, connections stay
   * open, the store's deadline and breaker see it), or killed and started again empty that much
   * later (`restart`: connections refused, then a Redis without a session).
   */
  redisFault(kind: 'stall' | 'restart', ms: number): Promise<void> {
    if (!this.redis) throw new Error('startRedis first');
    return kind === 'stall' ? this.redis.stall(ms) : this.redis.restart(ms);
  }

  /** A Redis key prefix of its own (`<tag><random>:`), its keys deleted at the end. */
  keyPrefix(tag: string): string {
    const prefix = `${tag}${randomBytes(4).toString('hex')}:`;
    this.prefixes.push(prefix);
    return prefix;
  }

  async createDatabase(prefix: string): Promise<TestDatabase> {
    const db = await createTestDatabase(process.env.BENCH_DB_PREFIX || prefix);
    this.databases.add(db);
    return db;
  }

  async dropDatabase(db: TestDatabase): Promise<void> {
    await db.drop();
    this.databases.delete(db);
  }

  /**
   * Starts `root`'s dist/src/server.js (this checkout's by default) with `env` over the
   * production defaults, and waits until /healthz answers; its log is `<dir>/<name>.log`.
   */
  async start(name: string, env: Record<string, string>, root = ROOT): Promise<Instance> {
    const port = await freePort();
    const dataDir = path.join(this.dir, name);
    mkdirSync(dataDir, { recursive: true });
    const child = spawnPinned(name, ALL_CPUS, process.execPath, ['dist/src/server.js'], {
      cwd: root,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', HOST: '127.0.0.1', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn', ...env },
      log: path.join(this.dir, `${name}.log`),
    });
    this.instances.add(child);
    void child.exited.then(() => this.instances.delete(child));
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.proc.exitCode !== null) throw new Error(`${name} exited (${child.proc.exitCode}):\n${lastLines(child.log)}`);
      try {
        const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (res.ok) return { name, base, child };
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${name} not ready after 30 s:\n${lastLines(child.log)}`);
      await sleep(100);
    }
  }

  stop(instance: Instance): Promise<void> {
    return stop(instance.child);
  }

  /** Removes everything; safe to call again (every later call waits for the first). */
  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      // Servers first, so nothing holds a connection to the database or Redis being removed.
      await Promise.all([...this.instances].map((c) => stop(c))).catch(() => {});
      for (const db of this.databases) await db.drop().catch((err: unknown) => console.error(`dropping ${db.name}:`, (err as Error).message));
      if (this.redis) await this.redis.close(this.prefixes).catch((err: unknown) => console.error('redis cleanup:', (err as Error).message));
      await stopAll().catch(() => {});
      if (!this.keepLogs) rmSync(this.dir, { recursive: true, force: true });
      else console.error(`kept the servers' logs in ${this.dir}`);
    })();
    return this.cleaning;
  }
}
