/**
 * `npm run bench`: Switchboard on each session backend against bare Koa, koa-session (cookie
 * and ioredis store), express-session + connect-redis and a hand-rolled Koa + ioredis reference,
 * on the same routes, the same Redis, the same load. See docs/performance.md.
 *
 *   npm run bench                         full run (5 rounds × 5 s per target and route, 200 sessions)
 *   npm run bench -- --quick              smoke check (1 round × 2 s, 100 sessions; writes quick.md)
 *   npm run bench -- --rounds 3 --duration 10 --targets sb-redis,koa-session-ioredis --routes read
 *
 * Options (most also an environment variable): --rounds (BENCH_ROUNDS), --duration seconds
 * (BENCH_DURATION), --warmup seconds per target and route before round 1 (BENCH_WARMUP),
 * --preroll seconds of unmeasured load right before each measured run (BENCH_PREROLL),
 * --connections (BENCH_CONNECTIONS), --sessions (BENCH_SESSION_COUNT), --targets, --routes,
 * --loadgen wrk|autocannon (BENCH_LOADGEN), --redis-url (BENCH_REDIS_URL; default: a private
 * redis-server for the run), --sb-env KEY=VALUE (repeatable; extra Switchboard environment),
 * --no-unleash, --no-build, --sb-root DIR (run Switchboard from another checkout, e.g. a
 * prototype; built there unless --no-build), --compare LABEL=DIR (repeatable: also run the
 * Switchboard in DIR, as targets sb-<backend>@LABEL, interleaved with the rest — A/B of a
 * change), --server-cpu / --load-cpu (default 0 / 1),
 * --out (directory), --keep-tmp.
 *
 * Layout: every server runs under `taskset -c <server-cpu>`; the load generator, Redis and this
 * runner under `taskset -c <load-cpu>`. All targets run for the whole benchmark and are measured
 * interleaved: round 1 runs every target on `read`, then every target on `write`, …, round 2
 * again, each round starting one target later, so drift hits every target alike.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLoad, type LoadGenerator, type Sample } from './lib/load.js';
import { runMain, stop, stopAll } from './lib/processes.js';
import { startRedis, memoryByPrefix, type BenchRedis } from './lib/redis.js';
import { markdown, type RedisBytes, median } from './lib/report.js';
import { login, refreshSessions, ROUTES, startTarget, targetDefs, verify, USER_AGENT, type Login, type Route, type RunningTarget } from './lib/targets.js';
import { startUnleashStub } from './lib/unleash-stub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2);
/** A mistake on the command line: one line and exit 2, before anything starts. */
function usageError(message: string): never {
  console.error(`${message} (npm run bench -- --help lists the options)`);
  process.exit(2);
}
const FLAGS = ['help', 'h', 'quick', 'no-build', 'no-unleash', 'keep-tmp'];
const VALUED = ['rounds', 'duration', 'warmup', 'preroll', 'connections', 'sessions', 'targets', 'routes', 'loadgen', 'redis-url', 'server-cpu', 'load-cpu', 'out', 'sb-root', 'compare', 'sb-env'];
// A mistyped option (`--quik`) would otherwise be ignored, and the full 17-minute run start.
for (let i = 0; i < argv.length; i++) {
  const name = /^--?([^=]+)/.exec(argv[i]!)?.[1];
  if (name === undefined) usageError(`unexpected argument ${argv[i]}`);
  if (VALUED.includes(name) && !argv[i]!.includes('=')) i++;
  else if (!FLAGS.includes(name) && !VALUED.includes(name)) usageError(`unknown option ${argv[i]}`);
}
function flag(name: string): boolean {
  return argv.includes(`--${name}`);
}
function opt(name: string, env: string, fallback: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1]!;
  const eq = argv.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  return process.env[env] ?? fallback;
}
function repeated(name: string): string[] {
  const out: string[] = [];
  argv.forEach((a, i) => {
    if (a === `--${name}` && argv[i + 1] !== undefined) out.push(argv[i + 1]!);
    else if (a.startsWith(`--${name}=`)) out.push(a.slice(name.length + 3));
  });
  return out;
}
if (flag('help') || flag('h')) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*|^ \* ?/gm, ''));
  process.exit(0);
}

const quick = flag('quick');
const num = (name: string, env: string, full: number, q: number) => {
  const v = Number(opt(name, env, String(quick ? q : full)));
  if (!Number.isFinite(v) || v < 0) usageError(`--${name} must be a number`);
  return v;
};
const options = {
  quick,
  rounds: num('rounds', 'BENCH_ROUNDS', 5, 1),
  duration: num('duration', 'BENCH_DURATION', 5, 2),
  warmup: num('warmup', 'BENCH_WARMUP', 3, 1),
  preroll: num('preroll', 'BENCH_PREROLL', 1, 0),
  connections: num('connections', 'BENCH_CONNECTIONS', 50, 50),
  // Four sessions per connection: two requests of one session rarely overlap (Switchboard's
  // optimistic concurrency retries, then answers 409, when a session's saves collide).
  sessions: num('sessions', 'BENCH_SESSION_COUNT', 200, 100),
  targets: opt('targets', 'BENCH_TARGETS', ''),
  routes: opt('routes', 'BENCH_ROUTES', ROUTES.join(',')).split(',').filter(Boolean) as Route[],
  loadgen: opt('loadgen', 'BENCH_LOADGEN', '') as LoadGenerator | '',
  redisUrl: opt('redis-url', 'BENCH_REDIS_URL', ''),
  serverCpu: opt('server-cpu', 'BENCH_SERVER_CPU', '0'),
  loadCpu: opt('load-cpu', 'BENCH_LOAD_CPU', '1'),
  out: path.resolve(ROOT, opt('out', 'BENCH_OUT_DIR', 'bench/results')),
  build: !flag('no-build'),
  unleash: !flag('no-unleash'),
  keepTmp: flag('keep-tmp'),
  sbRoot: path.resolve(ROOT, opt('sb-root', 'BENCH_SB_ROOT', '.')),
  variants: repeated('compare').map((lv) => {
    const eq = lv.indexOf('=');
    if (eq < 1 || !/^[\w.-]+$/.test(lv.slice(0, eq))) usageError('--compare takes LABEL=DIR (label: letters, digits, . _ -)');
    return { label: lv.slice(0, eq), root: path.resolve(ROOT, lv.slice(eq + 1)) };
  }),
  // Switchboard runs on its defaults, STORE_TIMEOUT_MS (25 ms) included: the store deadline no
  // longer counts time the event loop itself was busy (docs/performance.md, "Finding 1"), so a
  // saturated server does not fail over a healthy backend. `--sb-env KEY=VALUE` changes any setting.
  sbEnv: Object.fromEntries(
    [...repeated('sb-env').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])].filter(([k]) => k),
  ) as Record<string, string>,
};
for (const r of options.routes) if (!(ROUTES as readonly string[]).includes(r)) usageError(`unknown route ${r}: use ${ROUTES.join(', ')}`);

// ---------------------------------------------------------------- preflight

function have(command: string, args: string[] = ['--version']): boolean {
  return spawnSync(command, args, { stdio: 'ignore' }).error === undefined;
}
function versionOf(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0]!.trim();
}
if (!have('taskset')) throw new Error('taskset (util-linux) is needed to pin the server and the load generator');
const generator: LoadGenerator = options.loadgen || (have('wrk', ['-v']) ? 'wrk' : 'autocannon');
if (generator === 'wrk' && !have('wrk', ['-v'])) throw new Error('wrk not found: apt-get install -y wrk (or --loadgen autocannon)');
if (!options.redisUrl && !have('redis-server')) throw new Error('redis-server not found: apt-get install -y redis-server, or pass --redis-url');
if (os.cpus().length < 2 && options.serverCpu === '0' && options.loadCpu === '1') throw new Error('needs two CPUs (server on one, load generator and Redis on the other)');

// The runner itself stays off the server's core (its threads too).
spawnSync('taskset', ['-a', '-cp', options.loadCpu, String(process.pid)], { stdio: 'ignore' });

if (options.build) {
  console.error(`building Switchboard (npm run build in ${options.sbRoot})…`);
  const b = spawnSync('npm', ['run', 'build', '--silent'], { cwd: options.sbRoot, stdio: 'inherit' });
  if (b.status !== 0) throw new Error('npm run build failed: fix the build, or measure the existing dist/ with --no-build');
  for (const v of options.variants) {
    console.error(`building ${v.label} (npm run build in ${v.root})…`);
    if (spawnSync('npm', ['run', 'build', '--silent'], { cwd: v.root, stdio: 'inherit' }).status !== 0) throw new Error(`npm run build failed in ${v.root}`);
  }
}

// ---------------------------------------------------------------- run

const runId = randomBytes(6).toString('hex');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'switchboard-bench-'));
let redis: BenchRedis | undefined;
let stub: Awaited<ReturnType<typeof startUnleashStub>> | undefined;
const running: RunningTarget[] = [];
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    // Servers first (nothing writes any more), then our keys and a private redis-server, then anything left.
    await Promise.all(running.map((t) => stop(t.child))).catch(() => {});
    if (redis) await redis.close(running.flatMap((t) => (t.redisPrefix ? [t.redisPrefix] : []))).catch((err: unknown) => console.error('redis cleanup:', err));
    await stopAll().catch(() => {});
    stub?.server.close();
    if (!options.keepTmp) rmSync(tmp, { recursive: true, force: true });
    else console.error(`kept ${tmp}`);
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main() {
  const started = Date.now();
  redis = await startRedis({ url: options.redisUrl || undefined, cpu: options.loadCpu, dir: tmp });
  stub = await startUnleashStub();
  const defs = targetDefs({ runId, redisUrl: redis.url, unleashPort: stub.port, tmp, sbEnv: options.sbEnv, noUnleash: !options.unleash, sbRoot: options.sbRoot, variants: options.variants });
  const wanted = options.targets ? options.targets.split(',') : defs.map((d) => d.id);
  for (const w of wanted) if (!defs.some((d) => d.id === w)) throw new Error(`unknown target ${w}: use ${defs.map((d) => d.id).join(', ')}`);
  const selected = defs.filter((d) => wanted.includes(d.id));

  // A time bound for the whole run: twice the plan, plus set-up.
  const perRun = options.preroll + options.duration + 0.7;
  const planned = selected.length * options.routes.length * (options.warmup + 0.7 + options.rounds * perRun) + selected.length * options.sessions * 0.3;
  const bound = setTimeout(() => {
    console.error(`\nbenchmark exceeded its time bound (${Math.round(2 * planned + 300)} s): stopping`);
    void cleanup().finally(() => process.exit(2));
  }, (2 * planned + 300) * 1000);
  bound.unref();
  console.error(`run ${runId}: ${selected.length} targets × ${options.routes.length} routes × ${options.rounds} rounds × ${options.duration} s, ${generator}, ~${Math.round(planned / 60)} min`);

  for (const def of selected) {
    running.push(await startTarget(def, { root: ROOT, cpu: options.serverCpu, tmp }));
    console.error(`  started ${def.id} on ${running.at(-1)!.base}`);
  }

  // Logins: excluded from throughput. The same users, in the same order, everywhere.
  const logins = new Map<string, Login[]>();
  const sessionsFile = new Map<string, string>();
  for (const t of running) {
    const list: Login[] = [];
    for (let i = 1; i <= options.sessions; i++) list.push(await login(t, i));
    logins.set(t.id, list);
    const file = path.join(tmp, `sessions-${t.id}.txt`);
    writeFileSync(file, list.map((l) => `${l.cookie}\t${l.csrf}`).join('\n') + '\n');
    sessionsFile.set(t.id, file);
    console.error(`  ${t.id}: ${list.length} sessions`);
  }

  // Redis bytes per session, before any write adds preferences: same content everywhere.
  const bytes: RedisBytes[] = [];
  for (const t of running) {
    if (!t.redisPrefix || (t.backend && t.backend !== 'redis')) continue;
    const keys = await memoryByPrefix(redis.client, t.redisPrefix);
    const kind = (k: string) => (t.backend ? (k.startsWith('s:') ? 'session' : k.startsWith('u:') ? 'user index' : 'other') : 'session');
    const sessionKeys = keys.filter((k) => kind(k.key) === 'session');
    const n = sessionKeys.length;
    const kinds = [...new Set(keys.map((k) => kind(k.key)))].map((kd) => {
      const ks = keys.filter((k) => kind(k.key) === kd);
      return { kind: kd, type: ks[0]!.type, bytes: median(ks.map((k) => k.bytes)), payload: median(ks.map((k) => k.payload)) };
    });
    bytes.push({
      target: t.id,
      sessions: n,
      bytesPerSession: keys.reduce((a, k) => a + k.bytes, 0) / Math.max(1, n),
      sessionKeyBytes: median(sessionKeys.map((k) => k.bytes)),
      sessionKeyPayload: median(sessionKeys.map((k) => k.payload)),
      keys: kinds,
    });
  }

  // Every route answers what it should before anything is measured.
  for (const t of running) for (const route of options.routes) await verify(t, route, logins.get(t.id)![0]);

  const load = { generator, root: ROOT, tmp, serverCpu: options.serverCpu, loadCpu: options.loadCpu, connections: options.connections };
  let refreshed = 0;
  const refresh = async (t: RunningTarget) => {
    const list = logins.get(t.id)!;
    const n = await refreshSessions(t, list);
    if (n > 0) {
      refreshed += n;
      writeFileSync(sessionsFile.get(t.id)!, list.map((l) => `${l.cookie}\t${l.csrf}`).join('\n') + '\n');
    }
  };
  if (options.warmup > 0) {
    console.error(`warm-up: ${options.warmup} s per target and route`);
    for (const route of options.routes) {
      for (const t of running) {
        await refresh(t);
        await runLoad(load, t, sessionsFile.get(t.id)!, route, options.warmup, 0);
      }
    }
  }

  const samples: Sample[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    for (const route of options.routes) {
      const order = running.map((_, i) => running[(i + round - 1) % running.length]!);
      for (const t of order) {
        await refresh(t);
        if (options.preroll > 0) await runLoad(load, t, sessionsFile.get(t.id)!, route, options.preroll, round);
        const s = await runLoad(load, t, sessionsFile.get(t.id)!, route, options.duration, round);
        samples.push(s);
        console.error(
          `  round ${round}/${options.rounds} ${route.padEnd(5)} ${t.id.padEnd(22)} ${Math.round(s.rps).toString().padStart(6)} req/s  p99 ${(s.latency_us.p99 / 1000).toFixed(2).padStart(7)} ms  ${Math.round(s.cpuUsPerRequest)} µs/req${s.errorCount ? `  ERRORS ${s.errorCount}` : ''}`,
        );
      }
    }
  }

  // What Switchboard itself saw: the flag was evaluated, and no store failed or fell back.
  const notes: string[] = [];
  for (const t of running.filter((r) => r.backend)) {
    const text = await (await fetch(`${t.base}/metrics`)).text();
    const sum = (re: RegExp) => text.split('\n').reduce((a, line) => (re.test(line) ? a + Number(line.split(' ').pop()) : a), 0);
    const unleash = sum(/^session_backend_selected_total\{.*source="unleash"/);
    const env = sum(/^session_backend_selected_total\{.*source="env"/);
    const failed = sum(/^session_store_operations_total\{.*outcome="(error|timeout)"/);
    const fallbacks = sum(/^session_store_fallbacks_total\{/);
    // Which backend and operation failed, when any did: `redis save timeout 3, database save error 1`.
    const failures = text
      .split('\n')
      .filter((line) => /^session_store_operations_total\{.*outcome="(error|timeout)"/.test(line) && Number(line.split(' ').pop()) > 0)
      .map((line) => `${[...line.matchAll(/(?:backend|operation|outcome)="([^"]*)"/g)].map((m) => m[1]).join(' ')} ${line.split(' ').pop()}`);
    notes.push(
      `${t.id}: backend chosen by the Unleash flag ${unleash.toLocaleString('en-US')} times, by SESSION_STORAGE ${env.toLocaleString('en-US')} times; store operations failed or timed out: ${failed}${failures.length ? ` (${failures.join(', ')})` : ''}; fallbacks: ${fallbacks}.`,
    );
    // Every answer was 2xx, but some were served by another backend (a deadline missed on a busy
    // machine): this target measured a mix, not its backend.
    if (fallbacks > 0) notes.push(`**${t.id} fell back ${fallbacks} times**: part of its load was served by another backend, so its numbers are not comparable.`);
  }
  notes.push(`Before each run every session made one read and kept any cookie set (as a browser would): ${refreshed} cookie(s) were refreshed in all — the sealed-cookie backend's once-a-minute idle-expiry touch.`);
  const errored = samples.filter((s) => s.errorCount > 0);
  if (errored.length) notes.push(`**${errored.length} runs had errors** (non-2xx answers, timeouts or socket errors): their numbers are not comparable.`);
  if (stub) notes.push(`Unleash stub polls served: ${[...stub.polls].map(([b, n]) => `${b} ${n}`).join(', ') || 'none'}.`);

  const git = (args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
    } catch {
      return '?';
    }
  };
  const dirty = git(['status', '--porcelain', '--', 'src']).split('\n').filter(Boolean).length;
  const sbElsewhere =
    (options.sbRoot !== ROOT ? `; Switchboard run from ${options.sbRoot}` : '') + options.variants.map((v) => `; @${v.label} = ${v.root}`).join('');
  const command = ['npm run bench', argv.length ? `-- ${argv.join(' ')}` : ''].join(' ').trim();
  const report = {
    title: `Switchboard benchmark — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC${quick ? ' (quick)' : ''}`,
    command,
    machine: {
      CPU: `${os.cpus()[0]?.model ?? '?'} × ${os.cpus().length}`,
      memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
      kernel: `${os.type()} ${os.release()}`,
      Node: process.version,
      'load generator': generator === 'wrk' ? versionOf('wrk', ['-v']) : 'autocannon 9 (Node)',
      Redis: `${versionOf('redis-server', ['--version'])}${options.redisUrl ? ` at ${options.redisUrl}` : ', private instance for the run'}`,
      code: `${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ` + ${dirty} uncommitted change(s) under src/` : ''}${sbElsewhere}`,
    },
    settings: {
      layout: `servers on CPU ${options.serverCpu}; load generator, Redis and runner on CPU ${options.loadCpu} (taskset)`,
      load: `${options.connections} connections, 1 thread, ${options.sessions} sessions per target cycled per request, loopback`,
      runs: `${options.rounds} rounds × ${options.duration} s per target and route, interleaved; ${options.warmup} s warm-up per target and route; ${options.preroll} s unmeasured pre-roll before each run`,
      Switchboard: `NODE_ENV=production, LOG_LEVEL=warn, metrics on, ${options.unleash ? 'flag evaluated per request through Unleash (stub API, flexibleRollout 100 %, variant = backend)' : 'no Unleash (SESSION_STORAGE only)'}; env overrides: ${Object.entries(options.sbEnv).map(([k, v]) => `${k}=${v}`).join(' ') || 'none'}`,
      'login User-Agent': `\`${USER_AGENT}\` (${USER_AGENT.length} chars; Switchboard keeps it with the session)`,
      duration: `${Math.round((Date.now() - started) / 1000)} s`,
    },
    targets: running.map(({ id, label, group }) => ({ id, label, group })),
    routes: options.routes,
    samples,
    bytes,
    notes,
  };
  const md = markdown(report);
  console.log(md);
  mkdirSync(options.out, { recursive: true });
  const base = quick ? 'quick' : 'latest';
  writeFileSync(path.join(options.out, `${base}.md`), md);
  writeFileSync(path.join(options.out, `${base}.raw.json`), JSON.stringify({ ...report, options }, null, 2));
  console.error(`wrote ${path.relative(ROOT, path.join(options.out, `${base}.md`))} and ${base}.raw.json`);
}

await runMain(main, cleanup);
