/**
 * Changes lost while two instances disagree about the session backend flag: what a rollout
 * costs in the seconds when one instance already has the new SESSION_STORAGE and the other not.
 *
 *   npm run bench:disagree                                   the three disagreeing pairs and the redis/redis control, 60 s each
 *   npm run bench:disagree -- --pair cookie,redis --seconds 60 --users 20 --tabs 3
 *   npm run bench:disagree -- --pair cookie/redis,database/redis --pair redis/redis
 *
 * Per pair A/B: a private redis-server and a fresh PostgreSQL database (127.0.0.1:5432, user
 * postgres), shared by two built servers (dist/src/server.js) — A with SESSION_STORAGE=A, B with
 * SESSION_STORAGE=B, the same secrets and Redis key prefix. Each user signs up, then its tabs
 * share one cookie jar, as a browser's tabs do. Each tab loops: PATCH /api/session
 * {"preferences":{"t<tab>":n}} through A or B in turn, then GET /api/session through the other
 * instance, checking that preferences.t<tab> is at least the highest n that was answered 200
 * before that GET was sent. Lower or missing: a change answered 200 and lost. A 401 logs the
 * user in again (once for all its tabs) and restarts every tab's expectation, a new session.
 *
 * Why every request alternates: a user behind a load balancer that spreads requests over both
 * instances meets the disagreement on every request, so each save may find its session in the
 * other backend, moved there by the other instance a moment before — and with three tabs the
 * moves overlap. Real traffic, mostly sticky or mostly reads, meets it less often: this is the
 * ceiling of the loss, not its expected rate. A pair that agrees (redis/redis) is the control;
 * it must lose nothing, and the run exits 1 if it loses a change or sees a 401.
 *
 * Reported, one markdown row per pair: requests, changes answered 200, lost (and % of the 200s),
 * and the 401, 409 and 5xx answers among all requests. Details per pair go to stderr.
 *
 * Options: --pair A/B[,A/B…] or --pair A,B (repeatable; backends cookie, database, redis),
 * --seconds of load per pair (60), --users (20), --tabs per user (3), --out FILE (also write the
 * table there), --no-build (use the existing dist/), --keep-logs (keep the servers' logs),
 * --diag N with --diag-file FILE (the request windows of up to N losses and 401s, as JSON; one
 * file per pair, named FILE with -A-B before .json).
 *
 * Servers, Redis and the load share every CPU, unpinned: losses come from races, and pinning
 * would change their timing from what the project's earlier runs measured.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { lastLines, runMain, spawnPinned, stop, stopAll, type Child } from './lib/processes.js';
import { freePort, startRedis, type BenchRedis } from './lib/redis.js';
import { createTestDatabase, type TestDatabase } from '../test/support/postgres.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BACKENDS = ['cookie', 'database', 'redis'] as const;
type Backend = (typeof BACKENDS)[number];
type Pair = [Backend, Backend];
const DEFAULT_PAIRS: Pair[] = [
  ['cookie', 'redis'],
  ['database', 'redis'],
  ['cookie', 'database'],
  ['redis', 'redis'],
];
const COOKIE = 'sid';
const REQUEST_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------- options

function usage(message: string): never {
  console.error(`disagree: ${message} (--help lists the options)`);
  process.exit(2);
}
let parsed;
try {
  parsed = parseArgs({
    options: {
      pair: { type: 'string', multiple: true },
      seconds: { type: 'string', default: '60' },
      users: { type: 'string', default: '20' },
      tabs: { type: 'string', default: '3' },
      out: { type: 'string' },
      'no-build': { type: 'boolean', default: false },
      'keep-logs': { type: 'boolean', default: false },
      diag: { type: 'string', default: '0' },
      'diag-file': { type: 'string', default: 'disagree-diag.json' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  usage((err as Error).message);
}
const opts = parsed.values;
if (opts.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*|^ \* ?/gm, ''));
  process.exit(0);
}
const whole = (name: string, v: string, min: number) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) usage(`--${name} must be a whole number, at least ${min} (got ${v})`);
  return n;
};
const SECONDS = whole('seconds', opts.seconds, 1);
const USERS = whole('users', opts.users, 1);
const TABS = whole('tabs', opts.tabs, 1);
const DIAG = whole('diag', opts.diag, 0);

function backend(name: string): Backend {
  if (!(BACKENDS as readonly string[]).includes(name)) usage(`unknown backend ${name}: use ${BACKENDS.join(', ')}`);
  return name as Backend;
}
/** `a/b,c/d` is a list of pairs; `a,b` (the form of the harness this replaces) is one. */
function parsePairs(values: string[] | undefined): Pair[] {
  if (!values?.length) return DEFAULT_PAIRS;
  return values.flatMap((v): Pair[] => {
    const items = v.split(',').map((s) => s.trim());
    if (items.every((s) => !s.includes('/'))) {
      if (items.length !== 2) usage(`--pair ${v}: give two backends, A,B, or pairs A/B,C/D`);
      return [[backend(items[0]!), backend(items[1]!)]];
    }
    return items.map((s) => {
      const [a, b, ...rest] = s.split('/');
      if (a === undefined || b === undefined || rest.length) usage(`--pair ${v}: ${s} is not A/B`);
      return [backend(a), backend(b)];
    });
  });
}
const PAIRS = parsePairs(opts.pair);

// ---------------------------------------------------------------- the load

interface Stats {
  requests: number;
  status: Record<'200' | '201' | '204' | '401' | '403' | '409' | '5xx' | 'other' | 'error' | 'timeout', number>;
  patch: { sent: number; ok: number; s401: number; s409: number; s5xx: number; other: number };
  reads: { sent: number; ok: number; checked: number; s401: number; other: number };
  changesOk: number;
  lost: number;
  lostMissing: number;
  relogins: number;
  byInstance: Array<{ patch: number; ok: number }>;
  setCookiePrefixes: Record<string, number>;
  lossPatterns: Record<string, number>;
  errors: Record<string, number>;
}

type Status = number | 'error' | 'timeout';

/** One request as the diagnostics show it; cookies by kind (`r.`, `c.`, `d.`) and a slice of the token. */
interface Event {
  t: number;
  end: number;
  inst: 'A' | 'B';
  method: string;
  body?: unknown;
  status: Status;
  sent: string;
  sentTok?: string;
  set: string;
  setTok?: string;
  backend?: unknown;
  prefs?: unknown;
}

interface SessionAnswer {
  csrfToken?: string;
  preferences?: Record<string, unknown>;
  session?: { backend?: unknown };
  error?: { code?: unknown };
}

interface Tab {
  i: number;
  /** The highest n this tab saw answered 200 in the user's current session. */
  okMax: number;
  okEv: Map<number, Event>;
}

interface User {
  id: number;
  jar: Jar;
  email: string;
  password: string;
  csrf?: string;
  /** Bumped by every relogin: answers to requests sent in an older session count for nothing. */
  gen: number;
  log: Event[];
  tabs: Tab[];
  relogging: Promise<void> | null;
}

interface Diagnostics {
  losses: unknown[];
  logouts: unknown[];
}

/** What the session cookie value looks like: its backend's one-letter prefix, or a clear. */
const kind = (v: string | undefined) => (v == null ? '-' : v === '' ? '(clear)' : (/^([a-z])\./.exec(v)?.[1] ?? '?') + '.');

/** A browser's cookie jar, reduced to what these answers set: name=value, deleted when expired. */
class Jar {
  readonly c = new Map<string, string>();
  constructor(private readonly stats: Stats) {}
  header(): string {
    return [...this.c].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  /** What the response set for the session cookie: '' if it cleared it, undefined if it left it alone. */
  apply(res: Response): string | undefined {
    let touched: string | undefined;
    for (const line of res.headers.getSetCookie()) {
      const [nv = '', ...attrs] = line.split(';');
      const i = nv.indexOf('=');
      const name = nv.slice(0, i).trim();
      const value = nv.slice(i + 1).trim();
      let expired = value === '';
      for (const a of attrs) {
        const [k = '', v = ''] = a.trim().split('=');
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      if (expired) this.c.delete(name);
      else this.c.set(name, value);
      if (name === COOKIE) touched = expired ? '' : value;
      const p = kind(expired ? '' : value);
      this.stats.setCookiePrefixes[p] = (this.stats.setCookiePrefixes[p] ?? 0) + 1;
    }
    return touched;
  }
}

interface LoadResult {
  stats: Stats;
  seconds: number;
  diagnostics: Diagnostics;
}

async function runLoad(urls: [string, string]): Promise<LoadResult> {
  const stats: Stats = {
    requests: 0,
    status: { 200: 0, 201: 0, 204: 0, 401: 0, 403: 0, 409: 0, '5xx': 0, other: 0, error: 0, timeout: 0 },
    patch: { sent: 0, ok: 0, s401: 0, s409: 0, s5xx: 0, other: 0 },
    reads: { sent: 0, ok: 0, checked: 0, s401: 0, other: 0 },
    changesOk: 0,
    lost: 0,
    lostMissing: 0,
    relogins: 0,
    byInstance: [
      { patch: 0, ok: 0 },
      { patch: 0, ok: 0 },
    ],
    setCookiePrefixes: {},
    lossPatterns: {},
    errors: {},
  };
  const diagnostics: Diagnostics = { losses: [], logouts: [] };
  const t0 = Date.now();
  const now = () => Date.now() - t0;

  function countStatus(s: Status) {
    stats.requests++;
    if (s === 'error' || s === 'timeout') stats.status[s]++;
    else if (s >= 500) stats.status['5xx']++;
    else if (String(s) in stats.status) stats.status[String(s) as keyof Stats['status']]++;
    else stats.status.other++;
  }

  async function req(user: User, inst: 0 | 1, method: string, urlPath: string, body?: { preferences?: unknown } & Record<string, unknown>) {
    const headers: Record<string, string> = { accept: 'application/json' };
    const cookie = user.jar.header();
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && user.csrf) headers['x-csrf-token'] = user.csrf;
    const sentCookie = user.jar.c.get(COOKIE);
    const start = now();
    let res: Response | undefined;
    let json: SessionAnswer | undefined;
    let status: Status;
    try {
      res = await fetch(urls[inst] + urlPath, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        redirect: 'manual',
      });
      status = res.status;
      const text = await res.text();
      try {
        json = text ? (JSON.parse(text) as SessionAnswer) : undefined;
      } catch {
        json = undefined;
      }
    } catch (err) {
      status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'error';
    }
    countStatus(status);
    if (typeof status === 'number' && status >= 400) {
      const k = `${method} ${status} ${String(json?.error?.code ?? '')}`;
      stats.errors[k] = (stats.errors[k] ?? 0) + 1;
    }
    const setCookie = res ? user.jar.apply(res) : undefined;
    const ev: Event = {
      t: start,
      end: now(),
      inst: inst === 0 ? 'A' : 'B',
      method,
      body: body?.preferences,
      status,
      sent: kind(sentCookie),
      sentTok: sentCookie?.slice(2, 12),
      set: setCookie === undefined ? '-' : kind(setCookie),
      setTok: setCookie?.slice(2, 12),
      backend: json?.session?.backend,
      prefs: json?.preferences,
    };
    if (DIAG) {
      user.log.push(ev);
      if (user.log.length > 4000) user.log.splice(0, 2000);
    }
    return { status, json, ev };
  }

  async function signup(u: User) {
    const r = await req(u, u.id % 2 === 0 ? 0 : 1, 'POST', '/api/signup', { email: u.email, password: u.password, name: `Load ${u.id}` });
    if (r.status !== 201 && r.status !== 200) throw new Error(`signup ${u.id}: ${r.status} ${JSON.stringify(r.json)}`);
    u.csrf = r.json?.csrfToken;
    const s = await req(u, u.id % 2 === 0 ? 1 : 0, 'GET', '/api/session');
    if (s.status === 200 && s.json?.csrfToken) u.csrf = s.json.csrfToken;
  }

  /** All the user's tabs wait for one login: a browser's tabs share the new cookie. */
  function relogin(u: User): Promise<void> {
    if (u.relogging) return u.relogging;
    u.relogging = (async () => {
      stats.relogins++;
      if (DIAG && diagnostics.logouts.length < DIAG) diagnostics.logouts.push({ user: u.id, at: now(), window: u.log.slice(-15) });
      u.jar.c.clear();
      const r = await req(u, u.id % 2 === 0 ? 0 : 1, 'POST', '/api/login', { email: u.email, password: u.password });
      if (r.status === 200) u.csrf = r.json?.csrfToken;
      u.gen++;
      for (const tab of u.tabs) tab.okMax = 0;
    })().finally(() => {
      u.relogging = null;
    });
    return u.relogging;
  }

  function noteLoss(u: User, tab: Tab, want: number, got: unknown, readEv: Event) {
    stats.lost++;
    if (got === undefined) stats.lostMissing++;
    if (!DIAG) return;
    const okEv = tab.okEv.get(want);
    let pattern = 'lost 200 not in log';
    if (okEv) {
      // Did another request of this user, overlapping the lost 200, move the session (set a
      // cookie of another kind)? That is the race the server's move-following has to win.
      const movers = u.log.filter((e) => e !== okEv && e.t < okEv.end && e.end > okEv.t && e.set !== '-' && e.set !== okEv.sent);
      const moves = [...new Set(movers.map((e) => `${e.set} by ${e.inst}`))].join(',');
      pattern = `lost 200 by ${okEv.inst} (${okEv.method}) sent ${okEv.sent} set ${okEv.set}; ${movers.length ? `concurrent move ${okEv.sent}->${moves}` : 'no concurrent move'}`;
    }
    stats.lossPatterns[pattern] = (stats.lossPatterns[pattern] ?? 0) + 1;
    // The first N/2 losses, then a sample: a run with thousands still shows its later kinds.
    if (diagnostics.losses.length >= DIAG || (stats.lost > DIAG / 2 && stats.lost % 97 !== 0)) return;
    const from = okEv ? okEv.t - 300 : readEv.t - 1000;
    const window = u.log.filter((e) => e.t >= from && e.t <= readEv.end);
    diagnostics.losses.push({ user: u.id, tab: tab.i, want, got, lost200: okEv, read: readEv, window });
  }

  async function tabLoop(u: User, tab: Tab, deadline: number) {
    let n = 0;
    while (Date.now() < deadline) {
      if (u.relogging) await u.relogging;
      n++;
      const inst = (tab.i + n) % 2 === 0 ? 0 : 1;
      const gen = u.gen;
      stats.patch.sent++;
      stats.byInstance[inst]!.patch++;
      const p = await req(u, inst, 'PATCH', '/api/session', { preferences: { [`t${tab.i}`]: n } });
      if (p.status === 200) {
        stats.patch.ok++;
        stats.byInstance[inst]!.ok++;
        if (gen === u.gen) {
          stats.changesOk++;
          if (n > tab.okMax) tab.okMax = n;
          if (DIAG) {
            tab.okEv.set(n, p.ev);
            if (tab.okEv.size > 50) tab.okEv.delete(tab.okEv.keys().next().value!);
          }
        }
      } else if (p.status === 401) {
        stats.patch.s401++;
        await relogin(u);
        continue;
      } else if (p.status === 409) stats.patch.s409++;
      else if (typeof p.status === 'number' && p.status >= 500) stats.patch.s5xx++;
      else stats.patch.other++;
      if (Date.now() >= deadline) break;
      // Only the 200s that arrived before this GET is sent are expected in its answer.
      const want = tab.okMax;
      const rgen = u.gen;
      stats.reads.sent++;
      const r = await req(u, inst === 0 ? 1 : 0, 'GET', '/api/session');
      if (r.status === 200) {
        stats.reads.ok++;
        if (r.json?.csrfToken) u.csrf = r.json.csrfToken;
        if (rgen === u.gen && want > 0) {
          stats.reads.checked++;
          const got = r.json?.preferences?.[`t${tab.i}`];
          if (!(typeof got === 'number' && got >= want)) noteLoss(u, tab, want, got, r.ev);
        }
      } else if (r.status === 401) {
        stats.reads.s401++;
        await relogin(u);
      } else stats.reads.other++;
    }
  }

  const run = randomBytes(4).toString('hex');
  const users: User[] = Array.from({ length: USERS }, (_, id) => ({
    id,
    jar: new Jar(stats),
    email: `disagree-${run}-${id}@example.test`,
    password: `Pw-${randomBytes(12).toString('base64url')}`,
    gen: 0,
    log: [],
    tabs: Array.from({ length: TABS }, (_, i) => ({ i, okMax: 0, okEv: new Map<number, Event>() })),
    relogging: null,
  }));
  // Ten at a time: signup hashes the password (argon2), and a burst would time out.
  for (let i = 0; i < users.length; i += 10) await Promise.all(users.slice(i, i + 10).map(signup));
  const loadStart = Date.now();
  const deadline = loadStart + SECONDS * 1000;
  await Promise.all(users.flatMap((u) => u.tabs.map((tab) => tabLoop(u, tab, deadline))));
  return { stats, seconds: (Date.now() - loadStart) / 1000, diagnostics };
}

// ---------------------------------------------------------------- servers

const CPUS = `0-${os.cpus().length - 1}`;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'switchboard-disagree-'));
let redis: BenchRedis | undefined;
const databases = new Set<TestDatabase>();
const prefixes: string[] = [];
const instances = new Set<Child>();
let cleaning: Promise<void> | undefined;

interface Instance {
  base: string;
  child: Child;
}

async function startInstance(name: string, env: Record<string, string>, logDir: string): Promise<Instance> {
  const port = await freePort();
  const dataDir = path.join(logDir, name);
  mkdirSync(dataDir, { recursive: true });
  const child = spawnPinned(name, CPUS, process.execPath, ['dist/src/server.js'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', HOST: '127.0.0.1', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn', ...env },
    log: path.join(logDir, `${name}.log`),
  });
  instances.add(child);
  void child.exited.then(() => instances.delete(child));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.proc.exitCode !== null) throw new Error(`${name} exited (${child.proc.exitCode}):\n${lastLines(child.log)}`);
    try {
      const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.ok) return { base, child };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} not ready after 30 s:\n${lastLines(child.log)}`);
    await sleep(100);
  }
}

async function readyz(base: string): Promise<string> {
  try {
    const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5000) });
    return `${res.status} ${(await res.text()).slice(0, 300)}`;
  } catch (err) {
    return (err as Error).message;
  }
}

interface Row {
  pair: Pair;
  stats: Stats;
  seconds: number;
}


function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    // Servers first, so nothing holds a connection to the database or Redis being removed.
    await Promise.all([...instances].map((c) => stop(c))).catch(() => {});
    for (const db of databases) await db.drop().catch((err: unknown) => console.error(`dropping ${db.name}:`, (err as Error).message));
    if (redis) await redis.close(prefixes).catch((err: unknown) => console.error('redis cleanup:', (err as Error).message));
    await stopAll().catch(() => {});
    if (!opts['keep-logs']) rmSync(tmp, { recursive: true, force: true });
    else console.error(`kept the servers' logs in ${tmp}`);
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function runPair(pair: Pair, index: number, secrets: string): Promise<Row> {
  const [a, b] = pair;
  const label = `${a}/${b}`;
  const db = await createTestDatabase('switchboard_disagree');
  databases.add(db);
  // One prefix per pair: each pair starts from an empty Redis, as from an empty database.
  const keyPrefix = `dis${randomBytes(4).toString('hex')}${index}:`;
  prefixes.push(keyPrefix);
  const env = { DATABASE_URL: db.url, REDIS_URL: redis!.url, REDIS_KEY_PREFIX: keyPrefix, SESSION_SECRETS: secrets, COOKIE_SECURE: 'false' };
  // One after the other: the first applies the migrations to the new database.
  const instA = await startInstance(`${index}-A-${a}`, { ...env, SESSION_STORAGE: a }, tmp);
  const instB = await startInstance(`${index}-B-${b}`, { ...env, SESSION_STORAGE: b }, tmp);
  try {
    console.error(`${label}: A ${instA.base}, B ${instB.base}; ${USERS} users × ${TABS} tabs, ${SECONDS} s`);
    const { stats, seconds, diagnostics } = await runLoad([instA.base, instB.base]);
    const s = stats.status;
    console.error(
      `${label}: ${stats.requests} requests (${Math.round(stats.requests / seconds)}/s), PATCH 200: ${stats.changesOk}, lost: ${stats.lost} ` +
        `(${stats.lostMissing} key missing; ${stats.reads.checked} reads checked), 401: ${s[401]} (${stats.relogins} relogins), 409: ${s[409]}, 5xx: ${s['5xx']}, ` +
        `other: ${s.other + s[403]}, errors/timeouts: ${s.error}/${s.timeout}`,
    );
    if (Object.keys(stats.errors).length) console.error(`${label}: error answers ${JSON.stringify(stats.errors)}`);
    console.error(`${label}: session cookies set, by kind ${JSON.stringify(stats.setCookiePrefixes)}`);
    for (const [name, inst] of [['A', instA], ['B', instB]] as const) {
      const r = await readyz(inst.base);
      if (!r.startsWith('200 ')) console.error(`${label}: readyz ${name} after the load: ${r}`);
    }
    if (DIAG) {
      for (const [pattern, count] of Object.entries(stats.lossPatterns).sort((x, y) => y[1] - x[1])) console.error(`${label}: ${count} × ${pattern}`);
      if (diagnostics.losses.length || diagnostics.logouts.length) {
        const file = path.resolve(opts['diag-file'].replace(/(\.json)?$/, `-${a}-${b}.json`));
        writeFileSync(file, JSON.stringify(diagnostics, null, 1));
        console.error(`${label}: request windows of ${diagnostics.losses.length} losses and ${diagnostics.logouts.length} logouts in ${file}`);
      }
    }
    return { pair, stats, seconds };
  } finally {
    await Promise.all([stop(instA.child), stop(instB.child)]);
    await db.drop();
    databases.delete(db);
  }
}

const fmt = (n: number) => n.toLocaleString('en-US');
/** Two significant digits below 1 %: a single loss in 30,000 changes must not print as 0. */
const pct = (part: number, whole: number) => {
  if (whole === 0 || part === 0) return '0';
  const p = (100 * part) / whole;
  return p < 1 ? p.toPrecision(2) : p.toFixed(1);
};

async function main() {
  if (!opts['no-build'] && spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' }).status !== 0) throw new Error('npm run build failed');
  // Signups, two server starts and the database per pair, on top of the load: a hung run ends.
  const bound = PAIRS.length * (SECONDS + 120 + USERS * 2);
  const timer = setTimeout(() => {
    console.error(`\nexceeded its time bound (${bound} s): stopping`);
    void cleanup().finally(() => process.exit(2));
  }, bound * 1000);
  timer.unref();

  redis = await startRedis({ cpu: CPUS, dir: tmp });
  const secrets = randomBytes(32).toString('base64url');
  const rows: Row[] = [];
  for (const [i, pair] of PAIRS.entries()) rows.push(await runPair(pair, i + 1, secrets));

  const lines = [
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; ${os.cpus()[0]?.model ?? 'CPU'} × ${os.cpus().length}; ` +
      `${USERS} users × ${TABS} tabs, ${SECONDS} s per pair; every PATCH and the GET after it on different instances.`,
    '',
    '| instances (A/B) | requests | changes answered 200 | lost | lost % | 401 | 409 | 5xx |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(({ pair, stats: s }) => `| ${pair.join('/')} | ${fmt(s.requests)} | ${fmt(s.changesOk)} | ${fmt(s.lost)} | ${pct(s.lost, s.changesOk)} | ${fmt(s.status[401])} | ${fmt(s.status[409])} | ${fmt(s.status['5xx'])} |`),
  ];
  const report = lines.join('\n') + '\n';
  console.log(report);
  if (opts.out) writeFileSync(path.resolve(opts.out), report);
  const failedControls = rows.filter(({ pair, stats: s }) => pair[0] === pair[1] && (s.lost > 0 || s.status[401] > 0));
  if (failedControls.length) {
    console.error(`control ${failedControls.map((r) => r.pair.join('/')).join(', ')}: lost a change or logged a user out where both instances agree`);
    process.exitCode = 1;
  }
}

await runMain(main, cleanup);
