/**
 * Changes lost, stale reads, 409s and logouts while an operator flips the session backend over
 * and over: the flag override of one instance moved among cookie, database and Redis every
 * 100–150 ms, while browsers with several tabs keep saving and reading their sessions.
 *
 *   npm run bench:flips                                       one 60 s run: 8 users × 5 writers and a reader
 *   npm run bench:flips -- --seconds 30 --users 4 --flip-ms 50-80
 *   npm run bench:flips -- --compare ../base --runs 2          this checkout and ../base's build, runs alternated
 *   npm run bench:flips -- --seconds 15 --users 4 --redis-faults restart   Redis killed and restarted empty meanwhile
 *
 * Per run: a private redis-server (one for the whole script, a key prefix per run), a fresh
 * PostgreSQL database (127.0.0.1:5432, user postgres) and one built server (dist/src/server.js)
 * with SESSION_STORAGE=--first-backend (database). Each user signs up; its tabs share one cookie jar, as a
 * browser's tabs do: --writers writer tabs, each looping PATCH /api/session
 * {"preferences":{"w<w>":n}} with n rising, and one reader tab looping GET /api/session. A read
 * is stale when any writer's preference in its answer is below the highest n that writer had
 * answered 200 before the GET was sent. A witness tab writes keys x0, x1… once each, spread over
 * the load ({"preferences":{"x<i>":1}}): a writer's change lost mid-run is hidden from the final
 * check by the writer's next change, a witness's never is (the forty-third round's losses were all
 * found that way). Meanwhile a flipper sets the override (PUT
 * /api/admin/flags/session-storage with the admin token) to one of the two other backends, at
 * random, every --flip-ms (a random time in the range from one flip's start to the next). A
 * 401 logs the user in again (once for all its tabs) and restarts every expectation, a new
 * session. When the load stops and the server has had a quiet second, each user reads its
 * session once more: a writer whose final preference is below its highest n answered 200 is
 * missing a change. Whether it is lost, or the final read was stale: the users missing one read
 * again after RECHECK_MS, then save a key of their own ("check") and read once more — a change
 * still missing after that is lost for good (a save merges onto the session as the server holds
 * it, so a copy left behind somewhere is no longer the one served); one that came back was a
 * stale final read. With --checkpoint-every-s N, the same check runs during the load every N s:
 * each user's tabs wait before their next request, the requests in flight finish, and after
 * CHECKPOINT_QUIET_MS each user reads its session (a change lost mid-run and hidden by the end,
 * a writer's by its next one, shows there); a change it finds lost for good is expected no more.
 *
 * Why: every flip moves sessions between backends while saves of the same session are in flight
 * in other tabs; a move that races a save is where changes were lost, overwritten for a moment
 * (the stale reads) or refused (409). Flips this frequent, and five tabs writing one session, are
 * far beyond an operator's rollout: this is the ceiling, and the project aims at none of them.
 *
 * Reported, one markdown row per run: seconds of load, flips, requests (the users'; not the
 * flips), changes answered 200, stale reads, stale final reads, lost (for good), with checkpoints
 * the changes they found missing (and of those, lost for good), and the 401, 409 and 5xx answers.
 * Details per run go to stderr (reads checked, relogins, error answers by code,
 * stale reads by the cookie sent and the backend answered, refused flips, /readyz after the run;
 * per change missing at the end, the cookie each final read sent, the backend that answered and
 * the last flip). Exits 1 if any run lost a change (at the end or at a checkpoint), answered a
 * final read stale, or saw a 401.
 *
 * Options: --seconds of load per run (60), --users (8), --writers per user (5), --runs (1),
 * --flip-ms MIN-MAX between flips (100-150), --out FILE (also write the table there),
 * --no-build (use the existing dist/), --keep-logs (keep the servers' logs), --compare DIR (also
 * run DIR's build, DIR/dist/src/server.js with DIR as its working directory, in alternated runs:
 * this checkout, DIR, this checkout, DIR… --runs of each; built there too unless --no-build) —
 * how the project compares a commit with its base. --diag-file FILE: for each change missing
 * at the end (or at a checkpoint), the user's last DIAG_REQUESTS requests before the load stopped
 * (or the checkpoint; timing, status, cookie sent and set by kind, backend, preferences answered),
 * those within AROUND_MS of the 200 that answered the change, the check's reads and the flips of
 * the last seconds, as JSON (one file per run, named FILE with -<run> before .json).
 * --redis-faults stall|restart: while the load runs, the private redis-server is frozen (SIGSTOP,
 * then SIGCONT: the deadline, the breaker and its probe) or killed and started again empty on its
 * port, for --fault-ms MIN-MAX (300-1500) every --fault-every-ms MIN-MAX (2000-4000); --no-flips:
 * the faults (or the load) alone, the sessions left on --first-backend (database).
 * --backends LIST: the backends the flips move among, two or three of cookie, database, redis
 * comma-separated (all three): `--backends cookie,database` flips only between those two, each flip
 * to the one not set last, so every session's moves are database↔cookie (Redis out of the way);
 * --first-backend must be one of them.
 * --store-timeout-ms N: the servers' STORE_TIMEOUT_MS (default theirs, 100): cut to 25 or so, the
 * writes that miss Redis's deadline, fail over and land all the same happen often enough to see.
 * --checkpoint-every-s N: a check like the final one every N s of load (off by default; the
 * missing changes it finds go to stderr and the --diag-file too).
 *
 * Server, Redis and the load share every CPU, unpinned, as in bench:disagree: what is measured
 * comes from races, and their timing is the machine's.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { BrowserUser, StatusCounts, type Status } from './lib/browser.js';
import { BenchServers, ROOT, buildServer, readyz } from './lib/instances.js';
import { printHelp, usageFor, wholeOption } from './lib/cli.js';
import { runMain } from './lib/processes.js';

const BACKENDS = ['cookie', 'database', 'redis'] as const;
type Backend = (typeof BACKENDS)[number];
/** After the load, before the final reads: moves and saves still under way finish. */
const QUIET_MS = 1000;
/** A final read missing a change is repeated this much later: a stale read, or a change lost for good? */
const RECHECK_MS = 5000;
/** The requests per user the diagnostics keep, the last ones before the load stopped. */
const DIAG_REQUESTS = 20;
/** And those within this much of the 200 that answered the change missing (a witness's may be seconds old). */
const AROUND_MS = 1500;
/** The requests per user kept for those: the whole of a run of some seconds. */
const LOG_KEPT = 2000;
/** The key of the final save that tells a stale copy from a lost change: no writer's (w<w>). */
const CHECK_KEY = 'check';
/** At a checkpoint, between the last request of the paused tabs and the reads. */
const CHECKPOINT_QUIET_MS = 300;

// ---------------------------------------------------------------- options

const usage: (message: string) => never = usageFor('flips');
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
      'diag-file': { type: 'string' },
      'store-timeout-ms': { type: 'string' },
      'redis-faults': { type: 'string', default: 'none' },
      'fault-ms': { type: 'string', default: '300-1500' },
      'fault-every-ms': { type: 'string', default: '2000-4000' },
      'no-flips': { type: 'boolean', default: false },
      'first-backend': { type: 'string', default: 'database' },
      'checkpoint-every-s': { type: 'string' },
      backends: { type: 'string', default: BACKENDS.join(',') },
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
// A session holds at most 20 preferences (src/http/routes/account.ts), the final check's among them.
const WRITERS = whole('writers', opts.writers, 1);
if (WRITERS > 19) usage(`--writers is at most 19, a session's number of preferences less the final check's (got ${WRITERS})`);
const RUNS = whole('runs', opts.runs, 1);
const STORE_TIMEOUT_MS = opts['store-timeout-ms'] === undefined ? undefined : whole('store-timeout-ms', opts['store-timeout-ms'], 1);
/** A MIN-MAX option, in milliseconds. */
function msRange(name: string, value: string) {
  const m = /^(\d+)-(\d+)$/.exec(value);
  const [min, max] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(min >= 1 && max >= min)) usage(`--${name} must be MIN-MAX milliseconds, 1 ≤ MIN ≤ MAX (got ${value})`);
  return { min, max };
}
const FLIP_MS = msRange('flip-ms', opts['flip-ms']);
const FLIPS = !opts['no-flips'];
/** SESSION_STORAGE of the server: where the sessions are before the first flip (all the run with --no-flips). */
const FIRST_BACKEND = opts['first-backend'] as Backend;
if (!BACKENDS.includes(FIRST_BACKEND)) usage(`--first-backend is one of ${BACKENDS.join(', ')} (got ${FIRST_BACKEND})`);
/** `--backends`: the backends the flipper picks among (each flip to one of them other than the last). */
const FLIP_BACKENDS = [...new Set(opts.backends.split(','))] as Backend[];
if (FLIP_BACKENDS.length < 2 || !FLIP_BACKENDS.every((b) => BACKENDS.includes(b)) || !FLIP_BACKENDS.includes(FIRST_BACKEND)) usage(`--backends is two or three of ${BACKENDS.join(', ')}, comma-separated, --first-backend (${FIRST_BACKEND}) among them (got ${opts.backends})`);
const FAULTS = opts['redis-faults'] as 'none' | 'stall' | 'restart';
if (!['none', 'stall', 'restart'].includes(FAULTS)) usage(`--redis-faults is none, stall or restart (got ${FAULTS})`);
const FAULT_MS = msRange('fault-ms', opts['fault-ms']);
const FAULT_EVERY_MS = msRange('fault-every-ms', opts['fault-every-ms']);
const CHECKPOINT_S = opts['checkpoint-every-s'] === undefined ? undefined : whole('checkpoint-every-s', opts['checkpoint-every-s'], 1);
/**
 * Witness keys per user (`x0`, `x1`…), each written once in the run and never again: a writer's
 * change lost mid-run is hidden by its next one (the final check sees only each writer's highest
 * n), a witness's is not. As many as fit beside the writers' keys and the check's (at most 10).
 */
const WITNESSES = Math.min(10, 19 - WRITERS);
/** The preference key of writer or witness `w` (witnesses after the writers). */
const keyOf = (w: number) => (w < WRITERS ? `w${w}` : `x${w - WRITERS}`);
const COMPARE = opts.compare === undefined ? undefined : path.resolve(opts.compare);
if (COMPARE && !opts['no-build'] && !existsSync(path.join(COMPARE, 'package.json'))) usage(`--compare ${opts.compare}: no package.json there to build`);

// ---------------------------------------------------------------- the load

interface Stats {
  answers: StatusCounts;
  changesOk: number;
  /** Of changesOk, the witnesses' (each key written once). */
  witnessesOk: number;
  /** The Redis faults made (`--redis-faults`). */
  faults: number;
  reads: number;
  readsChecked: number;
  stale: number;
  /** Stale reads by the session cookie's kind sent and the backend the answer names. */
  staleKinds: Record<string, number>;
  /** Changes missing from the first final read that a later one showed: stale final reads. */
  staleFinal: number;
  /** Changes missing from the first final read and from every read after it: lost for good. */
  lost: number;
  /** The checkpoints made (`--checkpoint-every-s`), the changes their first read missed, and of those, the ones lost for good. */
  checkpoints: number;
  checkpointMissing: number;
  checkpointLost: number;
  relogins: number;
  flips: number;
  /** The backend the last flip answered 200 set (the first, before any flip): the next flip's is another. */
  lastFlip: Backend;
  flipsRefused: Record<string, number>;
  errors: Record<string, number>;
}

/** A session cookie's kind: its backend's one-letter prefix (`c.`, `d.`, `r.`). */
const cookieKind = (v: string | undefined) => (v === undefined ? 'no cookie' : `${/^([a-z])\./.exec(v)?.[1] ?? '?'}.`);

/** One request as the diagnostics show it: cookies by kind (`r.`, `c.`, `d.`, '-' none, '(clear)'), times in ms from the load's start. */
interface Event {
  t: number;
  end: number;
  /** `w<w>`, `reader`, or `final` for the reads and the check after the load, `checkpoint` for a checkpoint's. */
  tab: string;
  method: string;
  body?: unknown;
  status: Status;
  sent: string;
  set: string;
  backend?: unknown;
  prefs?: unknown;
}

/** What a session cookie value looks like: its backend's one-letter prefix, or a clear. */
const kind = (v: string | undefined) => (v === undefined ? '-' : v === '' ? '(clear)' : cookieKind(v));

interface User extends BrowserUser {
  /** Per writer, the highest n answered 200 in the user's current session; then per witness, 1 once answered 200. */
  answered: number[];
  /** When (ms from the load's start) the 200 that set each of `answered` arrived. */
  answeredAt: number[];
  /** The user's latest requests (LOG_KEPT at most). */
  log: Event[];
  /** The user's requests sent and not answered yet: a checkpoint waits for none. */
  inFlight: number;
  /** A checkpoint under way: every tab waits for it before its next request. */
  paused: Promise<void> | null;
}

/** A change missing from the first read of a check (the final one or a checkpoint's), and what became of it. */
interface Missing {
  /** `final`, or `checkpoint <s> s` from the load's start. */
  at: string;
  user: number;
  /** The preference key: a writer's (`w<w>`) or a witness's (`x<i>`). */
  key: string;
  answered: number;
  /** What each read of the check (first, RECHECK_MS later, after the check's save) showed for the key. */
  got: unknown[];
  lastFlip: Backend;
}

interface Diagnostics {
  /** The load's start (epoch ms), from which every `t` counts: to find the requests in a server's log. */
  startedAt: number;
  missing: Array<Missing & { requests: Event[]; around: Event[]; final: Event[]; flips: Array<{ t: number; to: Backend }>; faults: Fault[] }>;
}

/** A Redis fault, in ms from the load's start. */
interface Fault {
  t: number;
  end: number;
  kind: string;
}

interface RunResult {
  stats: Stats;
  seconds: number;
  readyz: string;
  diagnostics: Diagnostics;
}

async function runLoad(base: string, adminToken: string, tag: string): Promise<RunResult> {
  const stats: Stats = { answers: new StatusCounts(), changesOk: 0, witnessesOk: 0, faults: 0, reads: 0, readsChecked: 0, stale: 0, staleKinds: {}, staleFinal: 0, lost: 0, checkpoints: 0, checkpointMissing: 0, checkpointLost: 0, relogins: 0, flips: 0, lastFlip: FIRST_BACKEND, flipsRefused: {}, errors: {} };
  const t0 = Date.now();
  const now = () => Date.now() - t0;
  /** The flips answered 200 of the last seconds, for the diagnostics. */
  const flips: Array<{ t: number; to: Backend }> = [];
  /** The Redis faults of the run, for the diagnostics. */
  const faults: Fault[] = [];

  async function req(u: User, tab: string, method: string, urlPath: string, body?: { preferences?: unknown } & Record<string, unknown>) {
    const t = now();
    u.inFlight++;
    const a = await u.send(base + urlPath, method, body).finally(() => u.inFlight--);
    stats.answers.add(a.status);
    if (typeof a.status !== 'number' || a.status >= 400) {
      const k = `${method} ${a.status} ${String(a.json?.error?.code ?? '')}`.trim();
      stats.errors[k] = (stats.errors[k] ?? 0) + 1;
    }
    if (urlPath === '/api/session') {
      u.log.push({ t, end: now(), tab, method, body: body?.preferences, status: a.status, sent: kind(a.sent), set: kind(a.set), backend: a.json?.session?.backend, prefs: a.json?.preferences });
      if (u.log.length > LOG_KEPT) u.log.splice(0, u.log.length - LOG_KEPT / 2);
    }
    return a;
  }

  /** Before each request of a tab: a login or a checkpoint under way finishes first. */
  async function ready(u: User) {
    while (u.loggingIn || u.paused) await (u.loggingIn ?? u.paused);
  }

  /** All the user's tabs wait for one login: a browser's tabs share the new cookie. */
  function relogin(u: User): Promise<void> {
    return u.relogin(async () => {
      stats.relogins++;
      await req(u, 'login', 'POST', '/api/login', { email: u.email, password: u.password });
      u.answered.fill(0);
    });
  }

  async function writer(u: User, w: number, deadline: number) {
    let n = 0;
    while (Date.now() < deadline) {
      await ready(u);
      n++;
      const gen = u.gen;
      const p = await req(u, `w${w}`, 'PATCH', '/api/session', { preferences: { [`w${w}`]: n } });
      if (p.status === 200 && gen === u.gen) {
        stats.changesOk++;
        if (n > u.answered[w]!) [u.answered[w], u.answeredAt[w]] = [n, now()];
      } else if (p.status === 401) await relogin(u);
    }
  }

  /** Writes x0, x1… once each, spread over the load. */
  async function witness(u: User, deadline: number) {
    const every = (SECONDS * 1000) / (WITNESSES + 1);
    for (let i = 0; i < WITNESSES; i++) {
      await sleep(every * (0.5 + Math.random()));
      if (Date.now() >= deadline) return;
      await ready(u);
      const w = WRITERS + i;
      const gen = u.gen;
      const p = await req(u, keyOf(w), 'PATCH', '/api/session', { preferences: { [keyOf(w)]: 1 } });
      if (p.status === 200 && gen === u.gen) {
        stats.changesOk++;
        stats.witnessesOk++;
        [u.answered[w], u.answeredAt[w]] = [1, now()];
      } else if (p.status === 401) await relogin(u);
    }
  }

  /**
   * `--checkpoint-every-s`: every CHECKPOINT_S, every user's tabs paused, the requests in flight
   * (and a login under way) answered, a quiet of CHECKPOINT_QUIET_MS, then a check like the final
   * one. The flips and the faults go on meanwhile.
   */
  async function checkpointer(all: User[], deadline: number) {
    if (CHECKPOINT_S === undefined) return;
    for (;;) {
      // Not past the deadline: the load's seconds end with it.
      await sleep(Math.max(0, Math.min(CHECKPOINT_S * 1000, deadline - Date.now())));
      if (Date.now() >= deadline) return;
      let resume = () => {};
      const paused = new Promise<void>((resolve) => (resume = resolve));
      for (const u of all) u.paused = paused;
      while (all.some((u) => u.inFlight > 0 || u.loggingIn)) await sleep(10);
      await sleep(CHECKPOINT_QUIET_MS);
      stats.checkpoints++;
      try {
        await check(all, 'checkpoint');
      } finally {
        for (const u of all) u.paused = null;
        resume();
      }
    }
  }

  /** `--redis-faults`: the private redis-server stalled or restarted empty, every FAULT_EVERY_MS for FAULT_MS. */
  async function faulter(deadline: number) {
    if (FAULTS === 'none') return;
    for (;;) {
      await sleep(randomInt(FAULT_EVERY_MS.min, FAULT_EVERY_MS.max + 1));
      const ms = randomInt(FAULT_MS.min, FAULT_MS.max + 1);
      // Over by the end of the load: the final reads see Redis answering.
      if (Date.now() + ms >= deadline) return;
      const fault: Fault = { t: now(), end: -1, kind: `${FAULTS} ${ms} ms` };
      faults.push(fault);
      stats.faults++;
      await servers.redisFault(FAULTS, ms);
      fault.end = now();
    }
  }

  async function reader(u: User, deadline: number) {
    while (Date.now() < deadline) {
      await ready(u);
      // Only the 200s that arrived before this GET is sent are expected in its answer.
      const want = [...u.answered];
      const gen = u.gen;
      stats.reads++;
      const r = await req(u, 'reader', 'GET', '/api/session');
      if (r.status === 200 && gen === u.gen) {
        stats.readsChecked++;
        const prefs = r.json?.preferences ?? {};
        const behind = want.flatMap((n, w) => (n > 0 && !(typeof prefs[keyOf(w)] === 'number' && (prefs[keyOf(w)] as number) >= n) ? [prefs[keyOf(w)]] : []));
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
      const others = FLIP_BACKENDS.filter((b) => b !== stats.lastFlip);
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
        flips.push({ t: now(), to: next });
        if (flips.length > 2000) flips.splice(0, 1000);
      } else stats.flipsRefused[String(status)] = (stats.flipsRefused[String(status)] ?? 0) + 1;
    }
  }

  const users: User[] = Array.from({ length: USERS }, (_, id) =>
    Object.assign(new BrowserUser(id, `flips-${tag}-${id}@example.test`), {
      answered: new Array<number>(WRITERS + WITNESSES).fill(0),
      answeredAt: new Array<number>(WRITERS + WITNESSES).fill(0),
      log: [] as Event[],
      inFlight: 0,
      paused: null,
    }),
  );
  // Ten at a time: signup hashes the password (argon2), and a burst would time out.
  for (let i = 0; i < users.length; i += 10) {
    await Promise.all(
      users.slice(i, i + 10).map(async (u) => {
        const r = await req(u, 'signup', 'POST', '/api/signup', { email: u.email, password: u.password, name: `Flips ${u.id}` });
        if (r.status !== 201 && r.status !== 200) throw new Error(`signup ${u.id}: ${r.status} ${JSON.stringify(r.json)}`);
      }),
    );
  }

  const loadStart = Date.now();
  const diagnostics: Diagnostics = { startedAt: t0, missing: [] };
  const deadline = loadStart + SECONDS * 1000;
  await Promise.all([
    FLIPS ? flipper(deadline) : undefined,
    faulter(deadline),
    checkpointer(users, deadline),
    ...users.flatMap((u) => [reader(u, deadline), witness(u, deadline), ...Array.from({ length: WRITERS }, (_, w) => writer(u, w, deadline))]),
  ]);
  const seconds = (Date.now() - loadStart) / 1000;

  await sleep(QUIET_MS);
  await check(users, 'final');
  return { stats, seconds, readyz: await readyz(base), diagnostics };

  /**
   * The changes missing from a read of each user's session, and then, for the users missing one,
   * whether they come back: read again after RECHECK_MS, then once more after a save of the check
   * key. A change still missing then is lost for good. After the load (`final`), or at a
   * checkpoint, the tabs paused: a change a checkpoint finds lost is expected no more, or the
   * next check would count it again.
   */
  async function check(all: User[], phase: 'final' | 'checkpoint') {
    const started = now();
    const at = phase === 'final' ? 'final' : `checkpoint ${(started / 1000).toFixed(1)} s`;
    const missingOf = (u: User, prefs: Record<string, unknown>) =>
      u.answered.flatMap((n, w) => (n > 0 && !(typeof prefs[keyOf(w)] === 'number' && (prefs[keyOf(w)] as number) >= n) ? [w] : []));
    const found = new Map<User, { writers: number[]; requests: Event[]; reads: Array<Record<string, unknown>> }>();
    for (const u of all) {
      // The requests of the load, before the check's join them.
      const requests = u.log.slice(-DIAG_REQUESTS);
      const r = await req(u, phase, 'GET', '/api/session');
      if (r.status !== 200) {
        console.error(`${tag}: user ${u.id}'s ${at} read answered ${r.status}: its last changes unchecked`);
        continue;
      }
      const prefs = r.json?.preferences ?? {};
      const writers = missingOf(u, prefs);
      if (writers.length) found.set(u, { writers, requests, reads: [prefs] });
    }
    if (found.size === 0) return;
    await sleep(RECHECK_MS);
    for (const [u, f] of found) {
      const again = await req(u, phase, 'GET', '/api/session');
      f.reads.push(again.status === 200 ? (again.json?.preferences ?? {}) : {});
      // A save merges onto the session as the server holds it: whatever it answers is what holds it now.
      const save = await req(u, phase, 'PATCH', '/api/session', { preferences: { [CHECK_KEY]: Date.now() } });
      if (save.status !== 200) console.error(`${tag}: user ${u.id}'s ${at} check save answered ${save.status}`);
      const last = await req(u, phase, 'GET', '/api/session');
      f.reads.push(last.status === 200 ? (last.json?.preferences ?? {}) : {});
      const final = u.log.filter((e) => e.tab === phase && e.t >= started);
      for (const w of f.writers) {
        const got = f.reads.map((prefs) => prefs[keyOf(w)]);
        const back = typeof got[2] === 'number' && got[2] >= u.answered[w]!;
        if (phase === 'checkpoint') stats.checkpointMissing++;
        if (!back) stats[phase === 'final' ? 'lost' : 'checkpointLost']++;
        else if (phase === 'final') stats.staleFinal++;
        const reads = final
          .filter((e) => e.method === 'GET')
          .map((e, i) => `${JSON.stringify(got[i])} (sent ${e.sent}, from ${String(e.backend)})`)
          .join(', then ');
        console.error(
          `${tag}: ${at}: user ${u.id} key ${keyOf(w)}: ${u.answered[w]} answered 200, ${back ? 'a stale read' : 'lost for good'}: ` +
            `the reads show ${reads}; the last flip to ${stats.lastFlip}`,
        );
        const around = u.log.filter((e) => e.t < started && Math.abs(e.end - u.answeredAt[w]!) <= AROUND_MS);
        const from = Math.min(around[0]?.t ?? Infinity, f.requests[0]?.t ?? 0);
        diagnostics.missing.push({
          at,
          user: u.id,
          key: keyOf(w),
          answered: u.answered[w]!,
          got,
          lastFlip: stats.lastFlip,
          requests: f.requests,
          around,
          final,
          flips: flips.filter((flip) => flip.t >= from - 1000),
          faults: faults.filter((fault) => fault.end >= from - 5000),
        });
        if (!back) u.answered[w] = typeof got[2] === 'number' ? got[2] : 0;
      }
    }
  }
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
      ...(STORE_TIMEOUT_MS === undefined ? {} : { STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS) }),
    },
    side.root,
  );
  try {
    console.error(`${tag}: ${instance.base}; ${USERS} users × ${WRITERS} writers, ${WITNESSES} witnesses and a reader, ${setup()}, ${SECONDS} s`);
    const result = await runLoad(instance.base, adminToken, `${index}-${randomBytes(3).toString('hex')}`);
    const { stats, seconds, diagnostics } = result;
    const s = stats.answers.status;
    console.error(
      `${tag}: ${stats.answers.requests} requests (${Math.round(stats.answers.requests / seconds)}/s), ${stats.flips} flips, ${stats.faults} Redis faults, PATCH 200: ${stats.changesOk} (witnesses ${stats.witnessesOk}), ` +
        `reads: ${stats.reads} (${stats.readsChecked} checked, ${stats.stale} stale), stale final reads: ${stats.staleFinal}, lost: ${stats.lost}, ${checkpoints(stats)}401: ${s[401]} (${stats.relogins} relogins), ` +
        `409: ${s[409]}, 5xx: ${s['5xx']}, other: ${s.other + s[403]}, errors/timeouts: ${s.error}/${s.timeout}`,
    );
    if (Object.keys(stats.errors).length) console.error(`${tag}: error answers ${JSON.stringify(stats.errors)}`);
    if (stats.stale) console.error(`${tag}: stale reads by cookie and backend ${JSON.stringify(stats.staleKinds)}`);
    if (Object.keys(stats.flipsRefused).length) console.error(`${tag}: flips not answered 200 ${JSON.stringify(stats.flipsRefused)}`);
    if (!result.readyz.startsWith('200 ')) console.error(`${tag}: readyz after the run: ${result.readyz}`);
    if (opts['diag-file'] && diagnostics.missing.length) {
      const file = path.resolve(opts['diag-file'].replace(/(\.json)?$/, `-${index}.json`));
      writeFileSync(file, JSON.stringify(diagnostics, null, 1));
      console.error(`${tag}: the requests before ${diagnostics.missing.length} changes missing at the end or at a checkpoint in ${file}`);
    }
    return { ...result, side };
  } finally {
    await servers.stop(instance);
    await servers.dropDatabase(db);
  }
}

const fmt = (n: number) => n.toLocaleString('en-US');

/** With --checkpoint-every-s, what the checkpoints found, for the stderr summary. */
const checkpoints = (s: Stats) => (CHECKPOINT_S === undefined ? '' : `checkpoints: ${s.checkpoints} (missing ${s.checkpointMissing}, lost ${s.checkpointLost}), `);

/** The flips and Redis faults of a run, in words. */
function setup(): string {
  const among = FLIP_BACKENDS.length < BACKENDS.length ? ` among ${FLIP_BACKENDS.join(', ')}` : '';
  const flipping = FLIPS ? `flips every ${FLIP_MS.min}–${FLIP_MS.max} ms${among} from ${FIRST_BACKEND}` : `no flips, on ${FIRST_BACKEND}`;
  return FAULTS === 'none' ? flipping : `${flipping}, Redis ${FAULTS === 'stall' ? 'stalled' : 'restarted empty'} for ${FAULT_MS.min}–${FAULT_MS.max} ms every ${FAULT_EVERY_MS.min}–${FAULT_EVERY_MS.max} ms`;
}

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
      `${USERS} users × ${WRITERS} writers, ${WITNESSES} witnesses and a reader, one cookie jar each; ${setup()}; ${SECONDS} s per run` +
        (CHECKPOINT_S === undefined ? '' : `, a checkpoint every ${CHECKPOINT_S} s`) +
        (STORE_TIMEOUT_MS === undefined ? '.' : `; STORE_TIMEOUT_MS=${STORE_TIMEOUT_MS}.`),
    '',
    `| run | code | seconds | flips | requests | changes answered 200 | stale reads | stale final reads | lost |${CHECKPOINT_S === undefined ? '' : ' checkpoint misses (lost) |'} 401 | 409 | 5xx |`,
    `| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${CHECKPOINT_S === undefined ? '' : ' ---: |'} ---: | ---: | ---: |`,
    ...rows.map((r, i) => {
      const s = r.stats;
      const flips = refused(r) ? `${fmt(s.flips)} (${fmt(refused(r))} refused)` : fmt(s.flips);
      return `| ${i + 1} | ${r.side.label} | ${r.seconds.toFixed(1)} | ${flips} | ${fmt(s.answers.requests)} | ${fmt(s.changesOk)} | ${fmt(s.stale)} | ${fmt(s.staleFinal)} | ${fmt(s.lost)} |${CHECKPOINT_S === undefined ? '' : ` ${fmt(s.checkpointMissing)} (${fmt(s.checkpointLost)}) |`} ${fmt(s.answers.status[401])} | ${fmt(s.answers.status[409])} | ${fmt(s.answers.status['5xx'])} |`;
    }),
  ];
  const notReady = rows.flatMap((r, i) => (r.readyz.startsWith('200 ') ? [] : [`run ${i + 1}: /readyz after the run answered ${r.readyz.slice(0, 120)}`]));
  if (notReady.length) lines.push('', ...notReady);
  const report = lines.join('\n') + '\n';
  console.log(report);
  if (opts.out) writeFileSync(path.resolve(opts.out), report);
  const failed = rows.flatMap((r, i) => (r.stats.lost > 0 || r.stats.checkpointLost > 0 || r.stats.staleFinal > 0 || r.stats.answers.status[401] > 0 ? [`run ${i + 1} (${r.side.label})`] : []));
  if (failed.length) {
    console.error(`${failed.join(', ')}: lost a change (at the end or at a checkpoint), answered a final read stale or logged a user out`);
    process.exitCode = 1;
  }
}

await runMain(main, () => servers.cleanup());
