/**
 * Scale (issue 6, part 3): do the session stores stay flat as the number of sessions grows?
 * See docs/scale.md for the results and how to read them.
 *
 *   node --import tsx bench/scale.ts            10k, 100k and 1M sessions per backend
 *   node --import tsx bench/scale.ts --quick    10k and 100k only
 *
 * For each backend — DatabaseStore on SQLite (a temporary file), DatabaseStore on PostgreSQL
 * (a database created on 127.0.0.1:5432 and dropped after), RedisStore on the machine's Redis
 * (127.0.0.1:6379, keys under a run-unique prefix, deleted after) — the store is filled to each
 * size in turn and, at each size:
 *   - load(): latency p50/p99 over --samples lookups of random existing ids, one at a time;
 *   - listByUser(): latency p50/p99 for a user holding 5 sessions;
 *   - (SQL) the plan of each query the store issues, and on PostgreSQL the buffers it touches;
 *   - (SQL) deleteExpired() with nothing expired (what a cleanup pass costs when idle);
 *   - (SQL) cleanup: --expired expired rows are added, then deleteExpired(--batch) runs batch
 *     after batch exactly as scripts/sessions-cleanup.ts does (5 ms pause between batches),
 *     once from a separate process (how the script is deployed) and once in-process on the
 *     store's own connection (the worst case for SQLite's single connection), while a load()
 *     loop and a paced touch() loop keep running; their latency is compared with the same
 *     loops without cleanup. A third run (separate process) uses the change docs/scale.md
 *     suggests for deleteExpired (the SELECT ordered by expires_at), written here, not in src/.
 *     At the largest size the three runs are repeated with 10× as many expired rows; on
 *     PostgreSQL, both deleteExpired versions also run with the expired rows scattered among the
 *     live ones (CLUSTER in id-hash order) instead of appended at the end, and every pass
 *     reports what it read (pg_stat). Before each pass: ANALYZE (PostgreSQL) and a checkpoint,
 *     so it starts from a settled table.
 *
 * Filling: SQL tables get multi-row INSERTs (queryInterface.bulkInsert on the model's table and
 * fields) in transactions of 100k rows; PostgreSQL is ANALYZEd after every fill, as autovacuum
 * would be. Redis gets RedisStore.create() itself, 5,000 at a time (ioredis auto-pipelining, the
 * client options of src/sessions/redis-client.ts). Ids are derived from a run seed, so none is
 * kept in memory.
 *
 * Options: --sizes 10000,100000,1000000  --backends sqlite,postgres,redis  --samples 5000
 *   --list-samples 1000  --expired 10000  --batch 500  --baseline-ms 2000  --json FILE
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Cluster, Redis } from 'ioredis';
import { Op, QueryTypes, type Sequelize } from 'sequelize';
import type { BackendName } from '../src/config/config.js';
import { openDatabase } from '../src/db/database.js';
import { migrateUp } from '../src/db/migrator.js';
import { defineModels, type Models } from '../src/db/models.js';
import { jsonCodec } from '../src/sessions/codec.js';
import { DatabaseStore } from '../src/sessions/database-store.js';
import { createRedisClient, waitForRedis } from '../src/sessions/redis-client.js';
import { RedisStore } from '../src/sessions/redis-store.js';
import { hashSessionId, type SessionRecord } from '../src/sessions/session.js';
import type { IndexedSessionStore } from '../src/sessions/store.js';
import { createTestDatabase } from '../test/support/postgres.js';

const SCRIPT = fileURLToPath(import.meta.url);
const CLEANUP_PAUSE_MS = 5; // scripts/sessions-cleanup.ts yields this long between batches

// ------------------------------------------------------------------ the cleanup child process

type Variant = 'current' | 'ordered';
if (process.argv[2] === '--cleanup-child') {
  await cleanupChild(process.argv[3]!, Number(process.argv[4]), process.argv[5] as Variant);
  process.exit(0);
}

/** What `npm run sessions:cleanup` does to the sessions table, with each batch timed. */
async function cleanupChild(url: string, batch: number, variant: Variant): Promise<void> {
  const sequelize = await openDatabase(url);
  const models = defineModels(sequelize);
  const deleteExpired = deleter(models, variant);
  const batches: Array<[rows: number, ms: number]> = [];
  // Warm the code paths (Sequelize's query building, the driver) on statements that touch nothing.
  await models.SessionRow.findAll({ attributes: ['idHash'], where: { expiresAt: { [Op.lte]: 0 } }, limit: 1 });
  await models.SessionRow.destroy({ where: { idHash: ['-'] } });
  process.stdout.write('start\n');
  for (;;) {
    const t0 = performance.now();
    const n = await deleteExpired(batch);
    batches.push([n, performance.now() - t0]);
    if (n === 0) break;
    await sleep(CLEANUP_PAUSE_MS);
  }
  process.stdout.write(`done ${JSON.stringify(batches)}\n`);
  await sequelize.close();
}

/**
 * `current`: DatabaseStore.deleteExpired as it is — since 6986376 one DELETE whose batch is the
 * ordered SELECT. `ordered`: the change docs/scale.md first suggested, kept for comparison — two
 * statements, the SELECT ordered by expires_at so that PostgreSQL walks the expires_at index
 * instead of a LIMITed sequential or bitmap scan. (Its tables' "as is" was the code before both.)
 */
function deleter(models: Models, variant: Variant): (limit: number) => Promise<number> {
  if (variant === 'current') {
    const store = new DatabaseStore(models);
    return (limit) => store.deleteExpired(limit);
  }
  return async (limit) => {
    const rows = await models.SessionRow.findAll({ attributes: ['idHash'], where: { expiresAt: { [Op.lte]: Date.now() } }, order: [['expiresAt', 'ASC']], limit });
    if (rows.length === 0) return 0;
    return models.SessionRow.destroy({ where: { idHash: rows.map((r) => r.idHash) } });
  };
}

// ------------------------------------------------------------------ options

/** A mistake on the command line: one line and exit 2, before anything starts. */
function usageError(message: string): never {
  console.error(`${message} (bench/scale.ts --help lists the options)`);
  process.exit(2);
}
const OPTIONS = {
  quick: { type: 'boolean', default: false },
  sizes: { type: 'string' },
  backends: { type: 'string', default: 'sqlite,postgres,redis' },
  samples: { type: 'string', default: '5000' },
  'list-samples': { type: 'string', default: '1000' },
  expired: { type: 'string', default: '10000' },
  batch: { type: 'string', default: '500' },
  'baseline-ms': { type: 'string', default: '2000' },
  json: { type: 'string' },
  help: { type: 'boolean', default: false },
} as const;
function parseOptions() {
  try {
    return parseArgs({ options: OPTIONS }).values;
  } catch (err) {
    return usageError(err instanceof Error ? err.message : String(err));
  }
}
const opts = parseOptions();
if (opts.help) {
  console.log(readFileHeader());
  process.exit(0);
}
const positive = (name: string, v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) usageError(`--${name} must be a positive whole number (got ${v})`);
  return n;
};
const SIZES = (opts.sizes ?? (opts.quick ? '10000,100000' : '10000,100000,1000000')).split(',').map((s) => positive('sizes', s));
if (SIZES.some((s, i) => i > 0 && s <= SIZES[i - 1]!)) usageError('--sizes must increase: each size is filled on top of the one before');
const BACKENDS = opts.backends.split(',') as Array<'sqlite' | 'postgres' | 'redis'>;
for (const b of BACKENDS) if (!['sqlite', 'postgres', 'redis'].includes(b)) usageError(`unknown backend ${b}: use sqlite, postgres, redis`);
const SAMPLES = positive('samples', opts.samples);
const LIST_SAMPLES = positive('list-samples', opts['list-samples']);
const EXPIRED = positive('expired', opts.expired);
const BATCH = positive('batch', opts.batch);
const BASELINE_MS = positive('baseline-ms', opts['baseline-ms']);

function readFileHeader(): string {
  return readFileSync(SCRIPT, 'utf8').split('*/')[0]!.replace(/^\/\*\*|^ \* ?/gm, '');
}

// ------------------------------------------------------------------ sessions

const SEED = randomBytes(8).toString('hex');
const IDLE_MS = 2 * 60 * 60 * 1000;
const ABSOLUTE_MS = 24 * 60 * 60 * 1000;
/** The user whose listing is timed holds sessions 0-4; everyone else is one of USERS users. */
const LIST_USER = 1;
const LIST_SESSIONS = 5;
const USERS = 500_000;

/** Session i's id (what the cookie carries), derived from the run seed: 256 bits, base64url, like newSessionId(). */
const liveId = (i: number) => createHash('sha256').update(`${SEED}:${i}`).digest('base64url');
const expiredId = (round: number, j: number) => createHash('sha256').update(`${SEED}:x${round}:${j}`).digest('base64url');
const userOf = (i: number) => (i < LIST_SESSIONS ? LIST_USER : 1000 + ((i * 7919) % USERS));

let pool = randomBytes(0);
let poolAt = 0;
function random16(): string {
  if (poolAt + 16 > pool.length) {
    pool = randomBytes(64 * 1024);
    poolAt = 0;
  }
  poolAt += 16;
  return pool.subarray(poolAt - 16, poolAt).toString('base64url');
}

/** A session shaped like the application's (test/sessions/fixtures.ts makeRecord), idle for `idleFor` ms. */
function session(id: string, userId: number, backend: BackendName, idleFor: number): SessionRecord {
  const lastActivity = Date.now() - Math.floor(idleFor);
  const createdAt = lastActivity - 60_000;
  return {
    id,
    idHash: hashSessionId(id),
    handle: random16(),
    userId,
    backend,
    data: { csrfToken: random16(), user: { id: userId, email: `u${userId}@example.com`, name: 'Scale Üser', role: 'user' }, platformId: null },
    createdAt,
    issuedAt: createdAt,
    lastActivity,
    expiresAt: Math.min(lastActivity + IDLE_MS, createdAt + ABSOLUTE_MS),
    absoluteExpiresAt: createdAt + ABSOLUTE_MS,
    ip: '127.0.0.1',
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) switchboard-scale',
    version: 1,
  };
}
/** Live for at least 90 minutes: last active up to 30 minutes ago. */
const liveSession = (i: number, backend: BackendName) => session(liveId(i), userOf(i), backend, Math.random() * 30 * 60_000);
/** Expired up to an hour ago. */
const expiredSession = (round: number, j: number) => session(expiredId(round, j), 1000 + Math.floor(Math.random() * USERS), 'database', IDLE_MS + 1000 + Math.random() * 60 * 60_000);

// ------------------------------------------------------------------ statistics

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
interface Latency {
  n: number;
  p50: number;
  p99: number;
  max: number;
}
function latency(ms: number[]): Latency {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s[s.length - 1] ?? NaN };
}
const median = (xs: number[]) => quantile([...xs].sort((a, b) => a - b), 0.5);

// ------------------------------------------------------------------ resources (always released)

const cleanups: Array<() => Promise<void>> = [];
const children = new Set<ChildProcess>();
let cleaning: Promise<void> | undefined;
/** Set on SIGINT/SIGTERM: the Redis fill stops, so no key is written after its prefix is deleted. */
let stopping = false;
function releaseAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of children) child.kill('SIGTERM');
    for (const release of cleanups.splice(0).reverse()) {
      try {
        await release();
      } catch (err) {
        console.error(`cleanup failed: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: cleaning up`);
    stopping = true;
    void releaseAll().finally(() => process.exit(130));
  });
}
const log = (msg: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

// ------------------------------------------------------------------ SQL backends

interface SqlDb {
  kind: 'sqlite' | 'postgres';
  url: string;
  sequelize: Sequelize;
  models: Models;
  store: DatabaseStore;
  bytes(): Promise<number>;
}

async function openSql(kind: 'sqlite' | 'postgres'): Promise<SqlDb> {
  let url: string;
  let drop: () => Promise<void>;
  let bytes: (sequelize: Sequelize) => Promise<number>;
  if (kind === 'sqlite') {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'switchboard-scale-'));
    url = `sqlite:${path.join(dir, 'scale.sqlite')}`;
    drop = async () => rmSync(dir, { recursive: true, force: true });
    bytes = async () => readdirSync(dir).reduce((sum, f) => sum + statSync(path.join(dir, f)).size, 0);
  } else {
    const db = await createTestDatabase('switchboard_scale');
    url = db.url;
    drop = () => db.drop();
    bytes = async (sequelize) => {
      const [row] = await sequelize.query<{ n: string }>("SELECT pg_total_relation_size('sessions') AS n", { type: QueryTypes.SELECT });
      return Number(row?.n);
    };
  }
  cleanups.push(drop);
  const sequelize = await openDatabase(url);
  cleanups.push(() => sequelize.close());
  await migrateUp(sequelize);
  const models = defineModels(sequelize);
  return { kind, url, sequelize, models, store: new DatabaseStore(models), bytes: () => bytes(sequelize) };
}

/** Rows [from, to) made by `make`, as multi-row INSERTs through the model's table and column names. */
async function insertSql(db: SqlDb, from: number, to: number, make: (i: number) => SessionRecord): Promise<void> {
  const qi = db.sequelize.getQueryInterface();
  const table = db.models.SessionRow.getTableName() as string;
  const fields = Object.entries(db.models.SessionRow.getAttributes()).map(([attr, def]) => [attr, def.field ?? attr] as const);
  const TX = 100_000;
  const CHUNK = 1000;
  for (let start = from; start < to; start += TX) {
    const end = Math.min(to, start + TX);
    // Sequelize gives each SQLite transaction its own connection, closed at commit: the bigger
    // page cache speeds the fill without touching the connection the measurements use.
    await db.sequelize.transaction(async (transaction) => {
      if (db.kind === 'sqlite') await db.sequelize.query('PRAGMA cache_size=-262144', { transaction });
      for (let c = start; c < end; c += CHUNK) {
        const rows: Array<Record<string, unknown>> = [];
        for (let i = c; i < Math.min(end, c + CHUNK); i++) {
          const r = make(i);
          const attrs: Record<string, unknown> = { ...r, data: jsonCodec.encode(r.data) };
          rows.push(Object.fromEntries(fields.map(([attr, field]) => [field, attrs[attr]])));
        }
        await qi.bulkInsert(table, rows, { transaction });
      }
    });
  }
}

async function analyze(db: SqlDb): Promise<void> {
  if (db.kind === 'postgres') await db.sequelize.query('ANALYZE sessions');
}

/** The SQL statements `work` sends (Sequelize's query log), without the "Executing (default): " prefix. */
async function capture(db: SqlDb, work: () => Promise<unknown>): Promise<string[]> {
  const sql: string[] = [];
  // Sequelize reads `options.logging` at every query; the typings do not declare `options`.
  const options = (db.sequelize as unknown as { options: { logging: unknown } }).options;
  const previous = options.logging;
  options.logging = (msg: string) => void sql.push(msg.replace(/^Executing \([^)]*\): /, ''));
  try {
    await work();
  } finally {
    options.logging = previous;
  }
  return sql;
}

interface Plan {
  sql: string;
  plan: string[];
  /** PostgreSQL: shared buffers (8 kB pages) the statement touched, hit + read. */
  buffers?: number;
}
/** SQLite: EXPLAIN QUERY PLAN. PostgreSQL: EXPLAIN (ANALYZE, BUFFERS) — SELECTs only, it runs them. */
async function explain(db: SqlDb, sql: string): Promise<Plan> {
  if (db.kind === 'sqlite') {
    const rows = await db.sequelize.query<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, { type: QueryTypes.SELECT });
    return { sql, plan: rows.map((r) => r.detail) };
  }
  const rows = await db.sequelize.query<Record<string, string>>(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) ${sql}`, { type: QueryTypes.SELECT });
  const plan = rows.map((r) => r['QUERY PLAN'] ?? '');
  const top = plan.find((l) => l.includes('Buffers:')) ?? '';
  const buffers = ['hit', 'read'].reduce((sum, k) => sum + Number(new RegExp(`${k}=(\\d+)`).exec(top)?.[1] ?? 0), 0);
  return { sql, plan, buffers };
}
const withNow = (sql: string) => sql.replace(/\b\d{13}\b/g, String(Date.now()));
const shortSql = (sql: string) => sql.replace(/'[^']{20,}'(, '[^']{20,}')*/g, "'…'").replace(/\b\d{13}\b/g, ':now');

async function countSql(db: SqlDb, where: string): Promise<number> {
  const [row] = await db.sequelize.query<{ n: string | number }>(`SELECT count(*) AS n FROM sessions ${where}`, { type: QueryTypes.SELECT });
  return Number(row?.n);
}

// ------------------------------------------------------------------ measurements

async function timeLoads(store: IndexedSessionStore, size: number, n: number): Promise<Latency> {
  const ms: number[] = [];
  let misses = 0;
  for (let k = 0; k < n; k++) {
    const token = liveId(Math.floor(Math.random() * size));
    const t0 = performance.now();
    const record = await store.load(token);
    ms.push(performance.now() - t0);
    if (!record) misses++;
  }
  if (misses) throw new Error(`${misses} of ${n} loads of existing sessions missed`);
  return latency(ms);
}

async function timeListing(store: IndexedSessionStore, n: number): Promise<Latency> {
  const ms: number[] = [];
  for (let k = 0; k < n; k++) {
    const t0 = performance.now();
    const list = await store.listByUser(LIST_USER);
    ms.push(performance.now() - t0);
    if (list.length !== LIST_SESSIONS) throw new Error(`listByUser returned ${list.length} sessions, expected ${LIST_SESSIONS}`);
  }
  return latency(ms);
}

/** Loads random live sessions one after another until `stop()`; each sample is [end time, ms]. */
async function loadLoop(store: IndexedSessionStore, size: number, stop: () => boolean, out: Array<[number, number]>): Promise<number> {
  let misses = 0;
  while (!stop()) {
    const token = liveId(Math.floor(Math.random() * size));
    const t0 = performance.now();
    const record = await store.load(token);
    const t1 = performance.now();
    out.push([t1, t1 - t0]);
    if (!record) misses++;
  }
  return misses;
}

/**
 * Records activity on random live sessions (the write a request makes at most once per
 * SESSION_TOUCH_INTERVAL), one every TOUCH_PAUSE_MS, until `stop()`; each sample is [end time, ms].
 */
const TOUCH_PAUSE_MS = 5;
async function touchLoop(store: IndexedSessionStore, size: number, stop: () => boolean, out: Array<[number, number]>): Promise<number> {
  let misses = 0;
  while (!stop()) {
    const record = liveSession(Math.floor(Math.random() * size), store.backend);
    const t0 = performance.now();
    const touched = await store.touch(record);
    const t1 = performance.now();
    out.push([t1, t1 - t0]);
    if (!touched) misses++;
    await sleep(TOUCH_PAUSE_MS);
  }
  return misses;
}

interface CleanupRun {
  size: number;
  expired: number;
  runner: 'separate process' | 'in-process';
  variant: Variant;
  /** appended: the expired rows sit together at the end of the table, as inserted; scattered (PostgreSQL): CLUSTERed in id-hash order among the live rows. */
  layout: 'appended' | 'scattered';
  /** PostgreSQL: what the pass read, from pg_stat (sequential scans, rows they read, entries read from sessions_expires_at). */
  scans?: ScanCounters;
  plan: Plan;
  batches: number;
  deleted: number;
  wallMs: number;
  batchMs: Latency;
  firstBatchesMs: number;
  lastBatchesMs: number;
  emptyProbeMs: number;
  baseline: Latency;
  during: Latency;
  touchBaseline: Latency;
  touchDuring: Latency;
  misses: number;
}

interface ScanCounters {
  seqScans: number;
  seqRows: number;
  expiresIndexRows: number;
}
/**
 * Cumulative scan counters of the sessions table and its expires_at index. Only the cleanup
 * reads that index or scans the table sequentially (loads use the primary key; on a small table
 * the planner may seq-scan for the DELETE's IN list too), so the difference over a pass is the cleanup's. Every pooled connection is made to
 * flush its pending statistics first (PostgreSQL 15+); a finished child has flushed at exit.
 */
async function scanCounters(db: SqlDb): Promise<ScanCounters | undefined> {
  if (db.kind !== 'postgres') return undefined;
  await Promise.all(Array.from({ length: 10 }, () => db.sequelize.query('SELECT pg_stat_force_next_flush()')));
  await sleep(300);
  const [row] = await db.sequelize.query<{ seq_scan: string; seq_tup_read: string; idx_tup_read: string }>(
    `SELECT t.seq_scan, t.seq_tup_read, i.idx_tup_read FROM pg_stat_user_tables t JOIN pg_stat_user_indexes i ON i.relid = t.relid
      WHERE t.relname = 'sessions' AND i.indexrelname = 'sessions_expires_at'`,
    { type: QueryTypes.SELECT },
  );
  return { seqScans: Number(row?.seq_scan), seqRows: Number(row?.seq_tup_read), expiresIndexRows: Number(row?.idx_tup_read) };
}

let expiredRound = 0;
async function cleanupRun(db: SqlDb, size: number, expired: number, runner: CleanupRun['runner'], variant: Variant, layout: CleanupRun['layout'], selectSql: string): Promise<CleanupRun> {
  const round = expiredRound++;
  await insertSql(db, 0, expired, (j) => expiredSession(round, j));
  // Rewrites the table in id-hash order: expired rows end up spread among live ones, as they are
  // in a table that has lived a while (deleted rows' space reused), rather than all at the end.
  if (layout === 'scattered') await db.sequelize.query('CLUSTER sessions USING sessions_pkey');
  // ANALYZE as autovacuum would once enough of the table changed: the planner sees the expired rows.
  await analyze(db);
  // Start from written-out pages, as a cron job on a settled server would, not from the dirty
  // buffers the bulk insert just left (evicting those would be charged to the first batches).
  await db.sequelize.query(db.kind === 'postgres' ? 'CHECKPOINT' : 'PRAGMA wal_checkpoint(TRUNCATE)');
  const plan = await explain(db, withNow(selectSql));

  // Requests meanwhile: loads one after another, and a touch every few milliseconds.
  const base: Array<[number, number]> = [];
  const baseTouches: Array<[number, number]> = [];
  const until = performance.now() + BASELINE_MS;
  const baseOver = () => performance.now() >= until;
  let [misses, touchMisses] = await Promise.all([loadLoop(db.store, size, baseOver, base), touchLoop(db.store, size, baseOver, baseTouches)]);

  const before = await scanCounters(db);
  const samples: Array<[number, number]> = [];
  const touches: Array<[number, number]> = [];
  let done = false;
  const loop = loadLoop(db.store, size, () => done, samples);
  const touching = touchLoop(db.store, size, () => done, touches);
  let started = 0;
  let finished = 0;
  let batches: Array<[number, number]> = [];
  try {
    if (runner === 'in-process') {
      const deleteExpired = deleter(db.models, variant);
      started = performance.now();
      for (;;) {
        const t0 = performance.now();
        const n = await deleteExpired(BATCH);
        batches.push([n, performance.now() - t0]);
        if (n === 0) break;
        await sleep(CLEANUP_PAUSE_MS);
      }
      finished = performance.now();
    } else {
      const child = spawn(process.execPath, [...process.execArgv, SCRIPT, '--cleanup-child', db.url, String(BATCH), variant], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line === 'start') started = performance.now();
        else if (line.startsWith('done ')) {
          finished = performance.now();
          batches = JSON.parse(line.slice(5)) as Array<[number, number]>;
        }
      });
      const timer = setTimeout(() => child.kill('SIGTERM'), 15 * 60_000);
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      clearTimeout(timer);
      children.delete(child);
      if (code !== 0 || !finished) throw new Error(`cleanup process exited with ${code}: ${stderr.trim().slice(-2000)}`);
    }
  } finally {
    done = true;
    misses += await loop;
    touchMisses += await touching;
  }
  if (misses || touchMisses) throw new Error(`${misses} loads and ${touchMisses} touches of live sessions missed during the cleanup run`);
  const after = await scanCounters(db);
  const scans = before && after && { seqScans: after.seqScans - before.seqScans, seqRows: after.seqRows - before.seqRows, expiresIndexRows: after.expiresIndexRows - before.expiresIndexRows };
  const left = await countSql(db, `WHERE expires_at <= ${Date.now()}`);
  const total = await countSql(db, '');
  if (left !== 0 || total !== size) throw new Error(`after cleanup: ${left} expired rows left, ${total} rows (expected ${size})`);

  const full = batches.filter(([n]) => n > 0);
  const times = full.map(([, ms]) => ms);
  const edge = Math.min(5, times.length);
  return {
    size,
    expired,
    runner,
    variant,
    layout,
    scans,
    plan,
    batches: full.length,
    deleted: full.reduce((s, [n]) => s + n, 0),
    wallMs: finished - started,
    batchMs: latency(times),
    firstBatchesMs: median(times.slice(0, edge)),
    lastBatchesMs: median(times.slice(-edge)),
    emptyProbeMs: batches[batches.length - 1]?.[1] ?? NaN,
    baseline: latency(base.map(([, ms]) => ms)),
    during: latency(samples.filter(([t]) => t >= started && t <= finished).map(([, ms]) => ms)),
    touchBaseline: latency(baseTouches.map(([, ms]) => ms)),
    touchDuring: latency(touches.filter(([t]) => t >= started && t <= finished).map(([, ms]) => ms)),
    misses,
  };
}

// ------------------------------------------------------------------ per backend

interface SizeResult {
  size: number;
  fillMs: number;
  bytesPerSession?: number;
  load: Latency;
  list: Latency;
  idleCleanup?: Latency;
  plans?: { load: Plan; list: Plan; deleteExpired: Plan };
}
interface BackendResult {
  backend: 'sqlite' | 'postgres' | 'redis';
  sizes: SizeResult[];
  cleanup: CleanupRun[];
}

async function runSql(kind: 'sqlite' | 'postgres'): Promise<BackendResult> {
  log(`${kind}: opening`);
  const db = await openSql(kind);
  const result: BackendResult = { backend: kind, sizes: [], cleanup: [] };
  try {
    let filled = 0;
    for (const size of SIZES) {
      log(`${kind}: filling ${filled} → ${size}`);
      const t0 = performance.now();
      await insertSql(db, filled, size, (i) => liveSession(i, 'database'));
      await analyze(db);
      const fillMs = performance.now() - t0;
      filled = size;
      const bytesPerSession = (await db.bytes()) / size;

      log(`${kind} @${size}: load ×${SAMPLES}, listByUser ×${LIST_SAMPLES}`);
      await timeLoads(db.store, size, 1000);
      const load = await timeLoads(db.store, size, SAMPLES);
      await timeListing(db.store, 100);
      const list = await timeListing(db.store, LIST_SAMPLES);

      // load() runs as a prepared statement on the driver, past Sequelize's query log: its SQL,
      // with this id's hash in place of the parameter.
      const loadSql = `SELECT * FROM sessions WHERE id_hash = '${hashSessionId(liveId(Math.floor(Math.random() * size)))}'`;
      const [listSql] = await capture(db, () => db.store.listByUser(LIST_USER));
      // deleteExpired() too (one DELETE whose batch is this SELECT; EXPLAIN ANALYZE of the DELETE
      // itself would delete): the SELECT of a batch, as src/sessions/database-statements.ts sends it.
      const deleteSql = `SELECT id_hash FROM sessions WHERE expires_at <= ${Date.now()} ORDER BY expires_at LIMIT ${BATCH}${kind === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : ''}`;
      const [orderedSql] = await capture(db, () => deleter(db.models, 'ordered')(BATCH));
      const plans = { load: await explain(db, loadSql!), list: await explain(db, listSql!), deleteExpired: await explain(db, withNow(deleteSql!)) };

      const idle: number[] = [];
      for (let k = 0; k < 200; k++) {
        const t = performance.now();
        if ((await db.store.deleteExpired(BATCH)) !== 0) throw new Error('deleteExpired found expired rows in a table of live sessions');
        idle.push(performance.now() - t);
      }
      result.sizes.push({ size, fillMs, bytesPerSession, load, list, idleCleanup: latency(idle), plans });

      const largest = size === SIZES[SIZES.length - 1];
      const runs: Array<[number, CleanupRun['runner'], Variant, CleanupRun['layout']]> = [];
      for (const expired of largest ? [EXPIRED, EXPIRED * 10] : [EXPIRED]) {
        runs.push([expired, 'separate process', 'current', 'appended'], [expired, 'in-process', 'current', 'appended'], [expired, 'separate process', 'ordered', 'appended']);
      }
      if (largest && kind === 'postgres') {
        for (const expired of [EXPIRED, EXPIRED * 10]) runs.push([expired, 'separate process', 'current', 'scattered'], [expired, 'separate process', 'ordered', 'scattered']);
      }
      for (const [expired, runner, variant, layout] of runs) {
        log(`${kind} @${size}: cleanup of ${expired} expired (${layout}), ${runner}, ${variant} deleteExpired`);
        const run = await cleanupRun(db, size, expired, runner, variant, layout, variant === 'current' ? deleteSql! : orderedSql!);
        result.cleanup.push(run);
        log(
          `  ${run.batches} batches in ${(run.wallMs / 1000).toFixed(2)} s, batch p50 ${run.batchMs.p50.toFixed(1)} ms; ` +
            `load p99 ${run.baseline.p99.toFixed(2)} → ${run.during.p99.toFixed(2)} ms, touch p99 ${run.touchBaseline.p99.toFixed(2)} → ${run.touchDuring.p99.toFixed(2)} ms` +
            (run.scans ? `; ${run.scans.seqScans} seq scans reading ${run.scans.seqRows} rows, ${run.scans.expiresIndexRows} expires_at index entries` : ''),
        );
      }
    }
  } finally {
    log(`${kind}: dropping`);
    await releaseAll();
    cleaning = undefined;
  }
  return result;
}

async function deleteByPrefix(redis: Redis | Cluster, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  const node = redis as Redis;
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 10_000);
    cursor = next;
    if (keys.length > 0) deleted += await node.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

async function usedMemory(redis: Redis | Cluster): Promise<number> {
  const info = await (redis as Redis).info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1]);
}

async function runRedis(): Promise<BackendResult> {
  const prefix = `sbscale-${SEED}:`;
  const redis = createRedisClient({ enabled: true, url: 'redis://127.0.0.1:6379/0', sentinelName: 'mymaster', keyPrefix: prefix });
  redis.on('error', () => {
    // A lost connection fails the pending command, which is what the bench reports.
  });
  cleanups.push(async () => redis.disconnect());
  if (!(await waitForRedis(redis, 3000))) throw new Error('Redis at 127.0.0.1:6379 does not answer');
  // The fill's batch in flight: its keys are written after a signal too, so the deletion waits for it.
  let inFlight: Promise<unknown> = Promise.resolve();
  cleanups.push(async () => {
    await inFlight;
    log(`redis: deleted ${await deleteByPrefix(redis, prefix)} keys under ${prefix}`);
  });
  const store = new RedisStore(redis, { keyPrefix: prefix, absoluteTimeoutMs: ABSOLUTE_MS });
  const result: BackendResult = { backend: 'redis', sizes: [], cleanup: [] };
  try {
    const memory0 = await usedMemory(redis);
    let filled = 0;
    for (const size of SIZES) {
      log(`redis: filling ${filled} → ${size}`);
      const t0 = performance.now();
      for (let start = filled; start < size; start += 5000) {
        if (stopping) throw new Error('stopped');
        const creates: Array<Promise<string>> = [];
        for (let i = start; i < Math.min(size, start + 5000); i++) creates.push(store.create(liveSession(i, 'redis')));
        inFlight = Promise.allSettled(creates);
        await Promise.all(creates);
      }
      const fillMs = performance.now() - t0;
      filled = size;
      const bytesPerSession = ((await usedMemory(redis)) - memory0) / size;
      log(`redis @${size}: load ×${SAMPLES}, listByUser ×${LIST_SAMPLES}`);
      await timeLoads(store, size, 1000);
      const load = await timeLoads(store, size, SAMPLES);
      await timeListing(store, 100);
      const list = await timeListing(store, LIST_SAMPLES);
      result.sizes.push({ size, fillMs, bytesPerSession, load, list });
    }
  } finally {
    await releaseAll();
    cleaning = undefined;
  }
  return result;
}

// ------------------------------------------------------------------ report

const ms = (x: number) => (x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2));
const count = (n: number) => (n >= 1_000_000 && n % 1_000_000 === 0 ? `${n / 1_000_000}M` : n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n));
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const variantName = (c: CleanupRun) => (c.variant === 'current' ? 'as is' : 'two statements');

function report(results: BackendResult[], wallS: number): string {
  const out: string[] = [];
  const head = (cols: string[]) => out.push(`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`);
  const first = SIZES[0]!;
  const last = SIZES[SIZES.length - 1]!;

  for (const [title, pick] of [
    ['load() latency, ms (p50 / p99)', (s: SizeResult) => s.load],
    [`listByUser() latency for a user with ${LIST_SESSIONS} sessions, ms (p50 / p99)`, (s: SizeResult) => s.list],
  ] as const) {
    out.push(`### ${title}`, '');
    head(['backend', ...SIZES.map((s) => `${count(s)} sessions`), `p50 ${count(last)}/${count(first)}`, `p99 ${count(last)}/${count(first)}`]);
    for (const r of results) {
      const cells = r.sizes.map((s) => `${ms(pick(s).p50)} / ${ms(pick(s).p99)}`);
      const a = r.sizes[0]!;
      const z = r.sizes[r.sizes.length - 1]!;
      out.push(`| ${r.backend} | ${cells.join(' | ')} | ${ratio(pick(z).p50, pick(a).p50)} | ${ratio(pick(z).p99, pick(a).p99)} |`);
    }
    out.push('');
  }

  const sql = results.filter((r) => r.backend !== 'redis');
  const pg = sql.find((r) => r.backend === 'postgres');
  if (pg) {
    out.push('### PostgreSQL: shared buffers (8 kB pages) each statement touches (EXPLAIN ANALYZE, BUFFERS)', '');
    head(['statement', ...SIZES.map((s) => `${count(s)} sessions`)]);
    for (const [name, key] of [
      ['load(): SELECT by id_hash', 'load'],
      ['listByUser(): SELECT by user_id', 'list'],
      ['deleteExpired(): SELECT, nothing expired', 'deleteExpired'],
    ] as const) {
      out.push(`| ${name} | ${pg.sizes.map((s) => String(s.plans?.[key].buffers ?? '')).join(' | ')} |`);
    }
    out.push('');

    out.push(
      '### PostgreSQL: what the cleanup SELECT reads',
      '',
      'Plan and buffers: EXPLAIN ANALYZE of the first batch\'s SELECT. Rows read: over the whole pass (every SELECT and DELETE), from pg_stat: rows read by sequential scans + entries read from sessions_expires_at, against the rows deleted.',
      '',
    );
    head(['live', 'expired', 'layout', 'deleteExpired', 'plan', 'buffers, 1st batch', 'seq scans', 'rows read in the pass', 'read / deleted']);
    for (const c of pg.cleanup.filter((c) => c.runner === 'separate process')) {
      const node = /(Index Only Scan|Index Scan|Bitmap Heap Scan|Seq Scan)/.exec(c.plan.plan.join('\n'))?.[1] ?? '?';
      const read = c.scans ? c.scans.seqRows + c.scans.expiresIndexRows : NaN;
      out.push(
        `| ${count(c.size)} | ${count(c.expired)} | ${c.layout} | ${variantName(c)} | ${node} | ${c.plan.buffers} | ${c.scans?.seqScans ?? ''} | ${read.toLocaleString('en')} | ${(read / c.deleted).toFixed(1)} |`,
      );
    }
    out.push('');
  }

  if (sql.length) {
    out.push('### deleteExpired() with nothing expired, ms (p50 / p99 of 200 calls)', '');
    head(['backend', ...SIZES.map((s) => `${count(s)} sessions`)]);
    for (const r of sql) out.push(`| ${r.backend} | ${r.sizes.map((s) => `${ms(s.idleCleanup!.p50)} / ${ms(s.idleCleanup!.p99)}`).join(' | ')} |`);
    out.push('');

    out.push(
      `### Cleanup: deleteExpired(${BATCH}) until none left, ${CLEANUP_PAUSE_MS} ms between batches, while requests go on`,
      '',
      `Requests: load() of random live sessions one after another, and touch() of one every ${TOUCH_PAUSE_MS} ms; "without" is the same for ${BASELINE_MS / 1000} s just before the pass.`,
      '',
    );
    head(['backend', 'live', 'expired', 'layout', 'cleanup runs', 'deleteExpired', 'batches', 'wall s', 'ms/batch p50 / max', 'first 5 / last 5 batches (median ms)', 'load p50 without → during', 'load p99 without → during', 'loads during', 'touch p50 without → during', 'touch p99 without → during']);
    for (const r of sql) {
      for (const c of r.cleanup) {
        out.push(
          `| ${r.backend} | ${count(c.size)} | ${count(c.expired)} | ${c.layout} | ${c.runner} | ${variantName(c)} | ${c.batches} | ${(c.wallMs / 1000).toFixed(2)} | ${ms(c.batchMs.p50)} / ${ms(c.batchMs.max)} | ` +
            `${ms(c.firstBatchesMs)} / ${ms(c.lastBatchesMs)} | ${ms(c.baseline.p50)} → ${ms(c.during.p50)} | ${ms(c.baseline.p99)} → ${ms(c.during.p99)} | ${c.during.n} | ${ms(c.touchBaseline.p50)} → ${ms(c.touchDuring.p50)} | ${ms(c.touchBaseline.p99)} → ${ms(c.touchDuring.p99)} |`,
        );
      }
    }
    out.push('');
  }

  out.push('### Fill', '');
  head(['backend', ...SIZES.map((s) => `to ${count(s)}: s`), `bytes/session at ${count(last)}`]);
  for (const r of results) {
    const z = r.sizes[r.sizes.length - 1]!;
    out.push(`| ${r.backend} | ${r.sizes.map((s) => (s.fillMs / 1000).toFixed(1)).join(' | ')} | ${Math.round(z.bytesPerSession ?? NaN)} |`);
  }
  out.push('', `(bytes: SQLite file + WAL; PostgreSQL pg_total_relation_size('sessions'); Redis used_memory growth.)`, '');

  for (const r of sql) {
    const z = r.sizes[r.sizes.length - 1]!;
    const runs = r.cleanup.filter((c) => c.size === last && c.runner === 'separate process');
    const label = (c: CleanupRun) => `deleteExpired${c.variant === 'ordered' ? ', two statements,' : ''} (${count(c.expired)} expired, ${c.layout})`;
    out.push(`### ${r.backend}: query plans at ${count(last)} sessions`, '', '```');
    for (const [name, plan] of [
      ['load', z.plans!.load],
      ['listByUser', z.plans!.list],
      ['deleteExpired (nothing expired)', z.plans!.deleteExpired],
      ...runs.map((c) => [label(c), c.plan] as const),
    ] as const) {
      out.push(`-- ${name}: ${shortSql(plan.sql)}`, ...plan.plan.map((l) => `   ${l}`));
    }
    out.push('```', '');
  }
  out.push(`Run: ${new Date().toISOString()}, ${os.cpus().length} CPUs, node ${process.version}, ${(wallS / 60).toFixed(1)} min in all.`);
  return out.join('\n');
}

// ------------------------------------------------------------------ main

const t0 = performance.now();
log(`sizes ${SIZES.join(', ')}; backends ${BACKENDS.join(', ')}; ${SAMPLES} loads, ${LIST_SAMPLES} listings per size; ${EXPIRED} expired per cleanup run`);
const results: BackendResult[] = [];
try {
  for (const backend of BACKENDS) results.push(backend === 'redis' ? await runRedis() : await runSql(backend));
} finally {
  await releaseAll();
}
const markdown = report(results, (performance.now() - t0) / 1000);
console.log(markdown);
if (opts.json) writeFileSync(opts.json, JSON.stringify({ sizes: SIZES, samples: SAMPLES, listSamples: LIST_SAMPLES, expired: EXPIRED, batch: BATCH, results }, null, 2));
process.exit(0);
