/**
 * Changes lost, stale reads, 409s and logouts while an operator flips the session backend over
 * and over: the flag override of one instance moved among cookie, database and Redis every
 * 100–150 ms, while browsers with several tabs keep saving and reading their sessions.
 *
 *   npm run bench:flips                                       one 60 s run: 8 users × 5 writers and a reader
 *   npm run bench:flips -- --seconds 30 --users 4 --flip-ms 50-80
 *   npm run bench:flips -- --compare ../base --runs 2          this checkout and ../base's build, runs alternated
 *
 * Per run: a private redis-server (one for the whole script, a key prefix per run), a fresh
 * PostgreSQL database (127.0.0.1:5432, user postgres) and one built server (dist/src/server.js)
 * with SESSION_STORAGE=database. Each user signs up; its tabs share one cookie jar, as a
 * browser's tabs do: --writers writer tabs, each looping PATCH /api/session
 * {"preferences":{"w<w>":n}} with n rising, and one reader tab looping GET /api/session. A read
 * is stale when any writer's preference in its answer is below the highest n that writer had
 * answered 200 before the GET was sent. Meanwhile a flipper sets the override (PUT
 * /api/admin/flags/session-storage with the admin token) to one of the two other backends, at
 * random, every --flip-ms (a random time in the range from one flip's start to the next). A
 * 401 logs the user in again (once for all its tabs) and restarts every expectation, a new
 * session. When the load stops and the server has had a quiet second, each user reads its
 * session once more: a writer whose final preference is below its highest n answered 200 lost a
 * change.
 *
 * Why: every flip moves sessions between backends while saves of the same session are in flight
 * in other tabs; a move that races a save is where changes were lost, overwritten for a moment
 * (the stale reads) or refused (409). Flips this frequent, and five tabs writing one session, are
 * far beyond an operator's rollout: this is the ceiling, and the project aims at none of them.
 *
 * Reported, one markdown row per run: seconds of load, flips, requests (the users'; not the
 * flips), changes answered 200, stale reads, lost, and the 401, 409 and 5xx answers. Details per
 * run go to stderr (reads checked, relogins, error answers by code, stale reads by the cookie
 * sent and the backend answered, refused flips, /readyz after the run). Exits 1 if any run lost
 * a change or saw a 401.
 *
 * Options: --seconds of load per run (60), --users (8), --writers per user (5), --runs (1),
 * --flip-ms MIN-MAX between flips (100-150), --out FILE (also write the table there),
 * --no-build (use the existing dist/), --keep-logs (keep the servers' logs), --compare DIR (also
 * run DIR's build, DIR/dist/src/server.js with DIR as its working directory, in alternated runs:
 * this checkout, DIR, this checkout, DIR… --runs of each; built there too unless --no-build) —
 * how the project compares a commit with its base.
 *
 * Server, Redis and the load share every CPU, unpinned, as in bench:disagree: what is measured
 * comes from races, and their timing is the machine's.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BrowserUser, StatusCounts, type Status } from './lib/browser.js';
import { BenchServers, ROOT, buildServer, readyz } from './lib/instances.js';
import { runMain } from './lib/processes.js';

const BACKENDS = ['cookie', 'database', 'redis'] as const;
type Backend = (typeof BACKENDS)[number];
const FIRST_BACKEND: Backend = 'database';
/** After the load, before the final reads: moves and saves still under way finish. */
const QUIET_MS = 1000;

// ---------------------------------------------------------------- options

function usage(message: string): never {
  console.error(`flips: ${message} (--help lists the options)`);
  process.exit(2);
}
let parsed;
try {
  parsed = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      users: { type: 'string', default: '8' },
      writers: { type: 'string', default: '5' },
      runs: { type: 'string', default: '1' },
      'flip-ms': { type: 'string', default: '100-150' },
      out: { type: 'string' },
      compare: { type: 'string' },
      'no-build': { type: 'boolean', default: false },
      'keep-logs': { type: 'boolean', default: false },
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
// A session holds at most 20 preferences (src/http/routes/account.ts).
const WRITERS = whole('writers', opts.writers, 1);
if (WRITERS > 20) usage(`--writers is at most 20, a session's number of preferences (got ${WRITERS})`);
const RUNS = whole('runs', opts.runs, 1);
const FLIP_MS = (() => {
  const m = /^(\d+)-(\d+)$/.exec(opts['flip-ms']);
  const [min, max] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(min >= 1 && max >= min)) usage(`--flip-ms must be MIN-MAX milliseconds, 1 ≤ MIN ≤ MAX (got ${opts['flip-ms']})`);
  return { min, max };
})();
const COMPARE = opts.compare === undefined ? undefined : path.resolve(opts.compare);
if (COMPARE && !opts['no-build'] && !existsSync(path.join(COMPARE, 'package.json'))) usage(`--compare ${opts.compare}: no package.json there to build`);

// ---------------------------------------------------------------- the load

interface Stats {
  answers: StatusCounts;
  changesOk: number;
  reads: number;
  readsChecked: number;
  stale: number;
  /** Stale reads by the session cookie's kind sent and the backend the answer names. */
  staleKinds: Record<string, number>;
  lost: number;
  relogins: number;
  flips: number;
  /** The backend the last flip answered 200 set (the first, before any flip): the next flip's is another. */
  lastFlip: Backend;
  flipsRefused: Record<string, number>;
  errors: Record<string, number>;
}

/** A session cookie's kind: its backend's one-letter prefix (`c.`, `d.`, `r.`). */
const cookieKind = (v: string | undefined) => (v === undefined ? 'no cookie' : `${/^([a-z])\./.exec(v)?.[1] ?? '?'}.`);

interface User extends BrowserUser {
  /** Per writer, the highest n answered 200 in the user's current session. */
  answered: number[];
}

interface RunResult {
  stats: Stats;
  seconds: number;
  readyz: string;
}

async function runLoad(base: string, adminToken: string, tag: string): Promise<RunResult> {
  const stats: Stats = { answers: new StatusCounts(), changesOk: 0, reads: 0, readsChecked: 0, stale: 0, staleKinds: {}, lost: 0, relogins: 0, flips: 0, lastFlip: FIRST_BACKEND, flipsRefused: {}, errors: {} };

  async function req(u: User, method: string, urlPath: string, body?: unknown) {
    const a = await u.send(base + urlPath, method, body);
    stats.answers.add(a.status);
    if (typeof a.status !== 'number' || a.status >= 400) {
      const k = `${method} ${a.status} ${String(a.json?.error?.code ?? '')}`.trim();
      stats.errors[k] = (stats.errors[k] ?? 0) + 1;
    }
    return a;
  }

  /** All the user's tabs wait for one login: a browser's tabs share the new cookie. */
  function relogin(u: User): Promise<void> {
    return u.relogin(async () => {
      stats.relogins++;
      await req(u, 'POST', '/api/login', { email: u.email, password: u.password });
      u.answered.fill(0);
    });
  }

  async function writer(u: User, w: number, deadline: number) {
    let n = 0;
    while (Date.now() < deadline) {
      if (u.loggingIn) await u.loggingIn;
      n++;
      const gen = u.gen;
      const p = await req(u, 'PATCH', '/api/session', { preferences: { [`w${w}`]: n } });
      if (p.status === 200 && gen === u.gen) {
        stats.changesOk++;
        if (n > u.answered[w]!) u.answered[w] = n;
      } else if (p.status === 401) await relogin(u);
    }
  }

  async function reader(u: User, deadline: number) {
    while (Date.now() < deadline) {
      if (u.loggingIn) await u.loggingIn;
      // Only the 200s that arrived before this GET is sent are expected in its answer.
      const want = [...u.answered];
      const gen = u.gen;
      stats.reads++;
      const r = await req(u, 'GET', '/api/session');
      if (r.status === 200 && gen === u.gen) {
        stats.readsChecked++;
        const prefs = r.json?.preferences ?? {};
        const behind = want.flatMap((n, w) => (n > 0 && !(typeof prefs[`w${w}`] === 'number' && (prefs[`w${w}`] as number) >= n) ? [prefs[`w${w}`]] : []));
        if (behind.length) {
          stats.stale++;
          const k = `${cookieKind(r.sent)} sent, ${String(r.json?.session?.backend)} answered${behind.includes(undefined) ? ', a key missing' : ''}`;
          stats.staleKinds[k] = (stats.staleKinds[k] ?? 0) + 1;
        }
      } else if (r.status === 401) await relogin(u);
    }
  }

  async function flipper(deadline: number) {
    let last = Date.now();
    for (;;) {
      // Every MIN–MAX ms from the start of the last flip: a slow answer under load makes the next
      // flip come sooner, not the flips rarer.
      await sleep(Math.max(0, last + randomInt(FLIP_MS.min, FLIP_MS.max + 1) - Date.now()));
      if (Date.now() >= deadline) return;
      last = Date.now();
      const others = BACKENDS.filter((b) => b !== stats.lastFlip);
      const next = others[randomInt(others.length)]!;
      let status: Status;
      try {
        const res = await fetch(`${base}/api/admin/flags/session-storage`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ backend: next }),
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        status = res.status;
      } catch (err) {
        status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'error';
      }
      if (status === 200) {
        stats.flips++;
        stats.lastFlip = next;
      } else stats.flipsRefused[String(status)] = (stats.flipsRefused[String(status)] ?? 0) + 1;
    }
  }

  const users: User[] = Array.from({ length: USERS }, (_, id) =>
    Object.assign(new BrowserUser(id, `flips-${tag}-${id}@example.test`), { answered: new Array<number>(WRITERS).fill(0) }),
  );
  // Ten at a time: signup hashes the password (argon2), and a burst would time out.
  for (let i = 0; i < users.length; i += 10) {
    await Promise.all(
      users.slice(i, i + 10).map(async (u) => {
        const r = await req(u, 'POST', '/api/signup', { email: u.email, password: u.password, name: `Flips ${u.id}` });
        if (r.status !== 201 && r.status !== 200) throw new Error(`signup ${u.id}: ${r.status} ${JSON.stringify(r.json)}`);
      }),
    );
  }

  const loadStart = Date.now();
  const deadline = loadStart + SECONDS * 1000;
  await Promise.all([
    flipper(deadline),
    ...users.flatMap((u) => [reader(u, deadline), ...u.answered.map((_, w) => writer(u, w, deadline))]),
  ]);
  const seconds = (Date.now() - loadStart) / 1000;

  await sleep(QUIET_MS);
  for (const u of users) {
    const r = await req(u, 'GET', '/api/session');
    if (r.status !== 200) {
      console.error(`${tag}: user ${u.id}'s final read answered ${r.status}: its last changes unchecked`);
      continue;
    }
    const prefs = r.json?.preferences ?? {};
    u.answered.forEach((n, w) => {
      const got = prefs[`w${w}`];
      if (n > 0 && !(typeof got === 'number' && got >= n)) {
        stats.lost++;
        console.error(
          `${tag}: user ${u.id} writer ${w}: ${n} answered 200, the session ends with ${JSON.stringify(got)} ` +
            `(the last flip to ${stats.lastFlip}; the final read sent ${cookieKind(r.sent)}, answered from ${String(r.json?.session?.backend)})`,
        );
      }
    });
  }
  return { stats, seconds, readyz: await readyz(base) };
}

// ---------------------------------------------------------------- servers and runs

const servers = new BenchServers('flips', opts['keep-logs']);

interface Side {
  label: string;
  root: string;
}

interface Row extends RunResult {
  side: Side;
}

/** `<dir's name> (<commit>)`, the commit as git names it, or the directory alone outside git. */
function sideLabel(root: string, name: string): string {
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  return git.status === 0 ? `${name} (${git.stdout.trim()})` : name;
}

async function run(side: Side, index: number, redisUrl: string): Promise<Row> {
  const db = await servers.createDatabase('switchboard_flips');
  const adminToken = randomBytes(24).toString('base64url');
  const tag = `run ${index} ${side.label}`;
  const instance = await servers.start(
    `${index}-server`,
    {
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      // A prefix per run: each run starts from an empty Redis, as from an empty database.
      REDIS_KEY_PREFIX: servers.keyPrefix(`flips${index}`),
      SESSION_STORAGE: FIRST_BACKEND,
      ADMIN_TOKEN: adminToken,
      SESSION_SECRETS: randomBytes(32).toString('base64url'),
      COOKIE_SECURE: 'false',
    },
    side.root,
  );
  try {
    console.error(`${tag}: ${instance.base}; ${USERS} users × ${WRITERS} writers and a reader, flips every ${FLIP_MS.min}–${FLIP_MS.max} ms, ${SECONDS} s`);
    const result = await runLoad(instance.base, adminToken, `${index}-${randomBytes(3).toString('hex')}`);
    const { stats, seconds } = result;
    const s = stats.answers.status;
    console.error(
      `${tag}: ${stats.answers.requests} requests (${Math.round(stats.answers.requests / seconds)}/s), ${stats.flips} flips, PATCH 200: ${stats.changesOk}, ` +
        `reads: ${stats.reads} (${stats.readsChecked} checked, ${stats.stale} stale), lost: ${stats.lost}, 401: ${s[401]} (${stats.relogins} relogins), ` +
        `409: ${s[409]}, 5xx: ${s['5xx']}, other: ${s.other + s[403]}, errors/timeouts: ${s.error}/${s.timeout}`,
    );
    if (Object.keys(stats.errors).length) console.error(`${tag}: error answers ${JSON.stringify(stats.errors)}`);
    if (stats.stale) console.error(`${tag}: stale reads by cookie and backend ${JSON.stringify(stats.staleKinds)}`);
    if (Object.keys(stats.flipsRefused).length) console.error(`${tag}: flips not answered 200 ${JSON.stringify(stats.flipsRefused)}`);
    if (!result.readyz.startsWith('200 ')) console.error(`${tag}: readyz after the run: ${result.readyz}`);
    return { ...result, side };
  } finally {
    await servers.stop(instance);
    await servers.dropDatabase(db);
  }
}

const fmt = (n: number) => n.toLocaleString('en-US');

async function main() {
  const sides: Side[] = [{ label: sideLabel(ROOT, 'HEAD'), root: ROOT }];
  if (COMPARE) sides.push({ label: sideLabel(COMPARE, path.basename(COMPARE)), root: COMPARE });
  if (!opts['no-build']) for (const side of sides) buildServer(side.root);
  for (const side of sides) if (!existsSync(path.join(side.root, 'dist/src/server.js'))) throw new Error(`${side.root}/dist/src/server.js is missing: build it, or drop --no-build`);
  const plan = Array.from({ length: RUNS }, () => sides).flat();
  // Signups, a server start and a database per run, on top of the load.
  servers.boundTime(plan.length * (SECONDS + 120 + USERS * 2));
  const redisUrl = await servers.startRedis();
  const rows: Row[] = [];
  for (const [i, side] of plan.entries()) rows.push(await run(side, i + 1, redisUrl));

  const refused = (r: Row) => Object.values(r.stats.flipsRefused).reduce((a, b) => a + b, 0);
  const lines = [
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; ${os.cpus()[0]?.model ?? 'CPU'} × ${os.cpus().length}, load average ${os.loadavg()[0]!.toFixed(1)}; ` +
      `${USERS} users × ${WRITERS} writers and a reader, one cookie jar each; flips every ${FLIP_MS.min}–${FLIP_MS.max} ms; ${SECONDS} s per run.`,
    '',
    '| run | code | seconds | flips | requests | changes answered 200 | stale reads | lost | 401 | 409 | 5xx |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r, i) => {
      const s = r.stats;
      const flips = refused(r) ? `${fmt(s.flips)} (${fmt(refused(r))} refused)` : fmt(s.flips);
      return `| ${i + 1} | ${r.side.label} | ${r.seconds.toFixed(1)} | ${flips} | ${fmt(s.answers.requests)} | ${fmt(s.changesOk)} | ${fmt(s.stale)} | ${fmt(s.lost)} | ${fmt(s.answers.status[401])} | ${fmt(s.answers.status[409])} | ${fmt(s.answers.status['5xx'])} |`;
    }),
  ];
  const notReady = rows.flatMap((r, i) => (r.readyz.startsWith('200 ') ? [] : [`run ${i + 1}: /readyz after the run answered ${r.readyz.slice(0, 120)}`]));
  if (notReady.length) lines.push('', ...notReady);
  const report = lines.join('\n') + '\n';
  console.log(report);
  if (opts.out) writeFileSync(path.resolve(opts.out), report);
  const failed = rows.flatMap((r, i) => (r.stats.lost > 0 || r.stats.answers.status[401] > 0 ? [`run ${i + 1} (${r.side.label})`] : []));
  if (failed.length) {
    console.error(`${failed.join(', ')}: lost a change or logged a user out`);
    process.exitCode = 1;
  }
}

await runMain(main, () => servers.cleanup());
