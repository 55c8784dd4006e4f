/**
 * Two targets measured at the same time, sharing one core: a cost ratio that the machine's
 * swings cannot reach, because both sides live through the same swings.
 *
 *   npm run bench:side-by-side -- --a koa-session-ioredis --b sb-redis --routes read,write
 *   npm run bench:side-by-side -- --a sb-redis --b sb-redis@same --compare same=.   # A/A: the method's own spread
 *
 * Why: on the shared 2-vCPU VMs here, the CPU time one request takes jumps by up to 2× for
 * seconds at a time (docs/performance.md, tenth round), so the interleaved runs of `npm run bench`
 * put the same build at 1.14×–2.10× of a peer depending on which runs landed in a slow phase.
 * Here both servers are pinned to the server CPU together and loaded together, each by its own
 * wrk (the load CPU): whatever slows that core slows both alike, and each server's CPU time
 * per request (from /proc, its own threads only) is measured over the same seconds.
 *
 * Reported per route: each side's µs of CPU per request and req/s, per round, and the ratio
 * A ÷ B of CPU per request (B's advantage: 1.5 means B does a request for two thirds of A's
 * CPU). The ratio of req/s says less here — the scheduler shares the core, and a server that
 * waits on Redis leaves its share to the other — so it is shown, not used.
 *
 * Caveat: two processes on one core evict each other's caches, so both pay more per request
 * than alone; the ratio, not the microseconds, is the result.
 *
 * Options: --a, --b (target ids, as in `npm run bench`), --routes (read,write,anon), --rounds (8),
 * --duration seconds (5), --warmup seconds (3), --sessions per target (200), --connections per
 * target (50), --compare LABEL=DIR (repeatable, as in `npm run bench`), --sb-env KEY=VALUE
 * (repeatable), --no-build, --out FILE (also write the report there).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLoad, type Sample } from './lib/load.js';
import { runMain, stopAll } from './lib/processes.js';
import { startRedis, type BenchRedis } from './lib/redis.js';
import { median } from './lib/report.js';
import { login, refreshSessions, ROUTES, startTarget, targetDefs, verify, type Login, type Route, type RunningTarget } from './lib/targets.js';
import { startUnleashStub } from './lib/unleash-stub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*|^ \* ?/gm, ''));
  process.exit(0);
}
/** A bad option: one line, no stack trace. */
function usage(message: string): never {
  console.error(`side-by-side: ${message} (--help lists the options)`);
  process.exit(2);
}
const opt = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
};
const repeated = (name: string) => argv.flatMap((a, i) => (a === `--${name}` && argv[i + 1] !== undefined ? [argv[i + 1]!] : []));
const positive = (name: string, fallback: number) => {
  const v = Number(opt(name, String(fallback)));
  if (!Number.isFinite(v) || v <= 0) usage(`--${name} must be a positive number`);
  return v;
};

const idA = opt('a', 'koa-session-ioredis');
const idB = opt('b', 'sb-redis');
if (idA === idB) usage('--a and --b must differ; for an A/A run compare a checkout with itself: --b sb-redis@same --compare same=.');
const routes = opt('routes', 'read,write').split(',') as Route[];
for (const r of routes) if (!(ROUTES as readonly string[]).includes(r)) usage(`unknown route ${r}: use ${ROUTES.join(', ')}`);
const rounds = positive('rounds', 8);
const duration = positive('duration', 5);
const warmup = positive('warmup', 3);
const sessions = positive('sessions', 200);
const connections = positive('connections', 50);
const outFile = opt('out', '');
const variants = repeated('compare').map((lv) => {
  const eq = lv.indexOf('=');
  if (eq < 1) usage('--compare takes LABEL=DIR');
  return { label: lv.slice(0, eq), root: path.resolve(ROOT, lv.slice(eq + 1)) };
});
const sbEnv = Object.fromEntries(repeated('sb-env').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const serverCpu = '0';
const loadCpu = '1';

spawnSync('taskset', ['-a', '-cp', loadCpu, String(process.pid)], { stdio: 'ignore' });
if (!argv.includes('--no-build')) {
  for (const root of [ROOT, ...variants.map((v) => v.root)]) {
    if (spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' }).status !== 0) throw new Error(`npm run build failed in ${root}`);
  }
}

interface Side {
  target: RunningTarget;
  list: Login[];
  file: string;
  tmp: string;
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'switchboard-side-by-side-'));
let redis: BenchRedis | undefined;
/** The servers, wrk and the private redis-server stopped, and the directory gone. */
async function cleanup(): Promise<void> {
  try {
    await stopAll();
    if (redis) await redis.close([]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
// Ctrl-C or SIGTERM: cleaned up as at the end of a run (without this they outlived the runner).
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping`);
    void cleanup()
      .catch(() => {})
      .finally(() => process.exit(130));
  });
}

async function prepare(target: RunningTarget): Promise<Side> {
  const dir = path.join(tmp, `load-${target.id.replace(/[^\w-]/g, '_')}`);
  mkdirSync(dir, { recursive: true });
  const list: Login[] = [];
  for (let i = 1; i <= sessions; i++) list.push(await login(target, i));
  const side = { target, list, file: path.join(dir, 'sessions.txt'), tmp: dir };
  writeSessions(side);
  return side;
}

function writeSessions(s: Side) {
  writeFileSync(s.file, s.list.map((l) => `${l.cookie}\t${l.csrf}`).join('\n') + '\n');
}

/** Both loads at once, each with its own wrk on the load CPU. */
async function together(a: Side, b: Side, route: Route, seconds: number, round: number): Promise<[Sample, Sample]> {
  for (const s of [a, b]) if ((await refreshSessions(s.target, s.list)) > 0) writeSessions(s);
  const load = (s: Side) => runLoad({ generator: 'wrk', root: ROOT, tmp: s.tmp, serverCpu, loadCpu, connections }, s.target, s.file, route, seconds, round);
  return Promise.all([load(a), load(b)]);
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

async function main() {
  redis = await startRedis({ cpu: loadCpu, dir: tmp });
  const stub = await startUnleashStub();
  try {
    const defs = targetDefs({ runId: randomBytes(6).toString('hex'), redisUrl: redis.url, unleashPort: stub.port, tmp, sbEnv, noUnleash: false, sbRoot: ROOT, variants });
    const def = (id: string) => defs.find((d) => d.id === id) ?? fail(`unknown target ${id}: ${defs.map((d) => d.id).join(', ')}`);
    const a = await prepare(await startTarget(def(idA), { root: ROOT, cpu: serverCpu, tmp }));
    const b = await prepare(await startTarget(def(idB), { root: ROOT, cpu: serverCpu, tmp }));
    const lines = [
      `# Side by side: ${a.target.label} (A) and ${b.target.label} (B)`,
      '',
      '```sh',
      `npm run bench:side-by-side -- ${argv.join(' ')}`,
      '```',
      '',
      `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; ${os.cpus()[0]?.model ?? 'CPU'} × ${os.cpus().length}; both servers on CPU ${serverCpu}, ` +
        `two wrk (one per server, ${connections} connections each), Redis and this runner on CPU ${loadCpu}; ${sessions} sessions per server; ` +
        `${rounds} rounds × ${duration} s per route, after ${warmup} s of warm-up. A ÷ B is A's CPU per request over B's: above 1, B costs less.`,
    ];
    for (const route of routes) {
      await verify(a.target, route, a.list[0]);
      await verify(b.target, route, b.list[0]);
      await together(a, b, route, warmup, 0);
      const rows: Array<[Sample, Sample]> = [];
      for (let round = 1; round <= rounds; round++) {
        const pair = await together(a, b, route, duration, round);
        const errors = pair[0].errorCount + pair[1].errorCount;
        if (errors > 0) throw new Error(`${route} round ${round}: ${errors} errors (non-2xx or socket errors)`);
        rows.push(pair);
        console.error(`${route} ${round}/${rounds}: A ${fmt(pair[0].cpuUsPerRequest)} µs, B ${fmt(pair[1].cpuUsPerRequest)} µs, A ÷ B ${fmt(pair[0].cpuUsPerRequest / pair[1].cpuUsPerRequest, 2)}`);
      }
      const ratios = rows.map(([x, y]) => x.cpuUsPerRequest / y.cpuUsPerRequest);
      lines.push('', `## ${route}`, '', '| round | A µs/req | B µs/req | A ÷ B (CPU) | A req/s | B req/s | B ÷ A (req/s) |', '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
      rows.forEach(([x, y], i) => {
        lines.push(`| ${i + 1} | ${fmt(x.cpuUsPerRequest)} | ${fmt(y.cpuUsPerRequest)} | ${fmt(ratios[i]!, 2)} | ${fmt(x.rps)} | ${fmt(y.rps)} | ${fmt(y.rps / x.rps, 2)} |`);
      });
      lines.push(
        `| **median** | **${fmt(median(rows.map(([x]) => x.cpuUsPerRequest)))}** | **${fmt(median(rows.map(([, y]) => y.cpuUsPerRequest)))}** | ` +
          `**${fmt(median(ratios), 2)}** (${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)}) | ${fmt(median(rows.map(([x]) => x.rps)))} | ${fmt(median(rows.map(([, y]) => y.rps)))} | ${fmt(median(rows.map(([x, y]) => y.rps / x.rps)), 2)} |`,
      );
    }
    const report = lines.join('\n') + '\n';
    console.log(report);
    if (outFile) writeFileSync(path.resolve(outFile), report);
  } finally {
    stub.server.close();
  }
}

function fail(message: string): never {
  throw new Error(message);
}

await runMain(main, cleanup);
