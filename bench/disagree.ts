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
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BrowserUser, StatusCounts, type Status } from './lib/browser.js';
import { BenchServers, buildServer, readyz } from './lib/instances.js';
import { printHelp, usageFor, wholeOption } from './lib/cli.js';
import { runMain } from './lib/processes.js';

const BACKENDS = ['cookie', 'database', 'redis'] as const;
type Backend = (typeof BACKENDS)[number];
type Pair = [Backend, Backend];
const DEFAULT_PAIRS: Pair[] = [
  ['cookie', 'redis'],
  ['database', 'redis'],
  ['cookie', 'database'],
  ['redis', 'redis'],
];

// ---------------------------------------------------------------- options

const usage: (message: string) => never = usageFor('disagree');
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
if (opts.help) printHelp(import.meta.url);
const whole = wholeOption(usage);
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
  answers: StatusCounts;
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

interface Tab {
  i: number;
  /** The highest n this tab saw answered 200 in the user's current session. */
  okMax: number;
  okEv: Map<number, Event>;
}

interface User extends BrowserUser {
  log: Event[];
  tabs: Tab[];
}

interface Diagnostics {
  losses: unknown[];
  logouts: unknown[];
}

/** What the session cookie value looks like: its backend's one-letter prefix, or a clear. */
const kind = (v: string | undefined) => (v == null ? '-' : v === '' ? '(clear)' : (/^([a-z])\./.exec(v)?.[1] ?? '?') + '.');

interface LoadResult {
  stats: Stats;
  seconds: number;
  diagnostics: Diagnostics;
}

async function runLoad(urls: [string, string]): Promise<LoadResult> {
  const stats: Stats = {
    answers: new StatusCounts(),
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

  async function req(user: User, inst: 0 | 1, method: string, urlPath: string, body?: { preferences?: unknown } & Record<string, unknown>) {
    const start = now();
    const { status, json, sent: sentCookie, set: setCookie } = await user.send(urls[inst] + urlPath, method, body);
    stats.answers.add(status);
    if (typeof status === 'number' && status >= 400) {
      const k = `${method} ${status} ${String(json?.error?.code ?? '')}`;
      stats.errors[k] = (stats.errors[k] ?? 0) + 1;
    }
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
    await req(u, u.id % 2 === 0 ? 1 : 0, 'GET', '/api/session');
  }

  /** All the user's tabs wait for one login: a browser's tabs share the new cookie. */
  function relogin(u: User): Promise<void> {
    return u.relogin(async () => {
      stats.relogins++;
      if (DIAG && diagnostics.logouts.length < DIAG) diagnostics.logouts.push({ user: u.id, at: now(), window: u.log.slice(-15) });
      await req(u, u.id % 2 === 0 ? 0 : 1, 'POST', '/api/login', { email: u.email, password: u.password });
      for (const tab of u.tabs) tab.okMax = 0;
    });
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
      if (u.loggingIn) await u.loggingIn;
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
  const countCookie = (_name: string, value: string) => {
    const p = kind(value);
    stats.setCookiePrefixes[p] = (stats.setCookiePrefixes[p] ?? 0) + 1;
  };
  const users: User[] = Array.from({ length: USERS }, (_, id) =>
    Object.assign(new BrowserUser(id, `disagree-${run}-${id}@example.test`, countCookie), {
      log: [],
      tabs: Array.from({ length: TABS }, (_, i) => ({ i, okMax: 0, okEv: new Map<number, Event>() })),
    }),
  );
  // Ten at a time: signup hashes the password (argon2), and a burst would time out.
  for (let i = 0; i < users.length; i += 10) await Promise.all(users.slice(i, i + 10).map(signup));
  const loadStart = Date.now();
  const deadline = loadStart + SECONDS * 1000;
  await Promise.all(users.flatMap((u) => u.tabs.map((tab) => tabLoop(u, tab, deadline))));
  return { stats, seconds: (Date.now() - loadStart) / 1000, diagnostics };
}

// ---------------------------------------------------------------- servers

const servers = new BenchServers('disagree', opts['keep-logs']);

interface Row {
  pair: Pair;
  stats: Stats;
  seconds: number;
}


async function runPair(pair: Pair, index: number, redisUrl: string, secrets: string): Promise<Row> {
  const [a, b] = pair;
  const label = `${a}/${b}`;
  const db = await servers.createDatabase('switchboard_disagree');
  // One prefix per pair: each pair starts from an empty Redis, as from an empty database.
  const keyPrefix = servers.keyPrefix(`dis${index}`);
  const env = { DATABASE_URL: db.url, REDIS_URL: redisUrl, REDIS_KEY_PREFIX: keyPrefix, SESSION_SECRETS: secrets, COOKIE_SECURE: 'false' };
  // One after the other: the first applies the migrations to the new database.
  const instA = await servers.start(`${index}-A-${a}`, { ...env, SESSION_STORAGE: a });
  const instB = await servers.start(`${index}-B-${b}`, { ...env, SESSION_STORAGE: b });
  try {
    console.error(`${label}: A ${instA.base}, B ${instB.base}; ${USERS} users × ${TABS} tabs, ${SECONDS} s`);
    const { stats, seconds, diagnostics } = await runLoad([instA.base, instB.base]);
    const s = stats.answers.status;
    console.error(
      `${label}: ${stats.answers.requests} requests (${Math.round(stats.answers.requests / seconds)}/s), PATCH 200: ${stats.changesOk}, lost: ${stats.lost} ` +
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
    await Promise.all([servers.stop(instA), servers.stop(instB)]);
    await servers.dropDatabase(db);
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
  if (!opts['no-build']) buildServer();
  // Signups, two server starts and the database per pair, on top of the load.
  servers.boundTime(PAIRS.length * (SECONDS + 120 + USERS * 2));
  const redisUrl = await servers.startRedis();
  const secrets = randomBytes(32).toString('base64url');
  const rows: Row[] = [];
  for (const [i, pair] of PAIRS.entries()) rows.push(await runPair(pair, i + 1, redisUrl, secrets));

  const lines = [
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; ${os.cpus()[0]?.model ?? 'CPU'} × ${os.cpus().length}; ` +
      `${USERS} users × ${TABS} tabs, ${SECONDS} s per pair; every PATCH and the GET after it on different instances.`,
    '',
    '| instances (A/B) | requests | changes answered 200 | lost | lost % | 401 | 409 | 5xx |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      ({ pair, stats: s }) =>
        `| ${pair.join('/')} | ${fmt(s.answers.requests)} | ${fmt(s.changesOk)} | ${fmt(s.lost)} | ${pct(s.lost, s.changesOk)} | ${fmt(s.answers.status[401])} | ${fmt(s.answers.status[409])} | ${fmt(s.answers.status['5xx'])} |`,
    ),
  ];
  const report = lines.join('\n') + '\n';
  console.log(report);
  if (opts.out) writeFileSync(path.resolve(opts.out), report);
  const failedControls = rows.filter(({ pair, stats: s }) => pair[0] === pair[1] && (s.lost > 0 || s.answers.status[401] > 0));
  if (failedControls.length) {
    console.error(`control ${failedControls.map((r) => r.pair.join('/')).join(', ')}: lost a change or logged a user out where both instances agree`);
    process.exitCode = 1;
  }
}

await runMain(main, () => servers.cleanup());
