/**
 * Where one target spends its time under load: `node --cpu-prof` on the server, the same
 * layout as `npm run bench` (server pinned on one CPU; wrk, Redis and this runner on the other),
 * one measured window per route, analysed by package, function and application call stack.
 *
 *   node --import tsx bench/profile.ts --target sb-redis --routes read,write
 *   node --import tsx bench/profile.ts --target koa-session-ioredis --routes read --duration 10
 *
 * Options: --target (a bench target id), --routes, --duration seconds per route (10),
 * --warmup seconds (3), --sessions (50), --connections (50), --top rows (25), --sb-env KEY=VALUE
 * (repeatable; Switchboard otherwise runs on its defaults, as in the bench), --sb-root DIR, --no-build, --out directory
 * (bench/results/profiles). Writes <target>.cpuprofile (open it in Chrome DevTools or
 * speedscope) and <target>.md.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { analyse, analysisMarkdown } from './lib/cpuprofile.js';
import { runLoad } from './lib/load.js';
import { runMain, stop, stopAll } from './lib/processes.js';
import { startRedis, type BenchRedis } from './lib/redis.js';
import { login, refreshSessions, ROUTES, startTarget, targetDefs, verify, type Login, type Route, type RunningTarget } from './lib/targets.js';
import { startUnleashStub } from './lib/unleash-stub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
};
const sbEnv: Record<string, string> = {};
argv.forEach((a, i) => {
  if (a === '--sb-env' && argv[i + 1]?.includes('=')) {
    const kv = argv[i + 1]!;
    sbEnv[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
  }
});
const targetId = opt('target', 'sb-redis');
const routes = opt('routes', 'read,write').split(',') as Route[];
for (const r of routes) if (!(ROUTES as readonly string[]).includes(r)) throw new Error(`unknown route ${r}`);
const duration = Number(opt('duration', '10'));
const warmup = Number(opt('warmup', '3'));
const sessions = Number(opt('sessions', '50'));
const connections = Number(opt('connections', '50'));
const top = Number(opt('top', '25'));
const outDir = path.resolve(ROOT, opt('out', 'bench/results/profiles'));
const serverCpu = '0';
const loadCpu = '1';

spawnSync('taskset', ['-a', '-cp', loadCpu, String(process.pid)], { stdio: 'ignore' });
const sbRoot = path.resolve(ROOT, opt('sb-root', '.'));
if (!argv.includes('--no-build') && spawnSync('npm', ['run', 'build', '--silent'], { cwd: sbRoot, stdio: 'inherit' }).status !== 0) throw new Error('npm run build failed');

const runId = randomBytes(6).toString('hex');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'switchboard-profile-'));
const profDir = path.join(tmp, 'prof');
let redis: BenchRedis | undefined;
let target: RunningTarget | undefined;

async function main() {
  redis = await startRedis({ cpu: loadCpu, dir: tmp });
  const stub = await startUnleashStub();
  try {
    const def = targetDefs({ runId, redisUrl: redis.url, unleashPort: stub.port, tmp, sbEnv, noUnleash: false, sbRoot }).find((d) => d.id === targetId);
    if (!def) throw new Error(`unknown target ${targetId}`);
    target = await startTarget(def, { root: ROOT, cpu: serverCpu, tmp, nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir] });
    const list: Login[] = [];
    for (let i = 1; i <= sessions; i++) list.push(await login(target, i));
    const file = path.join(tmp, 'sessions.txt');
    writeFileSync(file, list.map((l) => `${l.cookie}\t${l.csrf}`).join('\n') + '\n');
    const load = { generator: 'wrk' as const, root: ROOT, tmp, serverCpu, loadCpu, connections };
    const windows: Array<{ route: Route; from: number; to: number; rps: number; cpuUs: number; requests: number }> = [];
    for (const route of routes) {
      await verify(target, route, list[0]);
      await runLoad(load, target, file, route, warmup, 0);
      if ((await refreshSessions(target, list)) > 0) writeFileSync(file, list.map((l) => `${l.cookie}\t${l.csrf}`).join('\n') + '\n');
      // Load only counts while wrk runs: the window starts a little after wrk starts and ends before it stops.
      const from = Number(process.hrtime.bigint() / 1000n) + 300_000;
      const s = await runLoad(load, target, file, route, duration, 1);
      const to = Number(process.hrtime.bigint() / 1000n) - 300_000;
      windows.push({ route, from, to, rps: s.rps, cpuUs: s.cpuUsPerRequest, requests: Math.round((s.rps * (to - from)) / 1e6) });
      console.error(`${targetId} ${route}: ${Math.round(s.rps)} req/s, ${Math.round(s.cpuUsPerRequest)} µs CPU per request, errors ${s.errorCount}`);
    }
    await stop(target.child, 15_000);
    const prof = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (!prof) throw new Error('no .cpuprofile written');
    mkdirSync(outDir, { recursive: true });
    const kept = path.join(outDir, `${targetId}.cpuprofile`);
    copyFileSync(path.join(profDir, prof), kept);
    const parts = [`# CPU profile: ${def.label}`, '', `\`node --import tsx bench/profile.ts ${argv.join(' ')}\` — ${connections} connections, ${sessions} sessions, ${duration} s per route.`, ''];
    for (const w of windows) {
      parts.push(analysisMarkdown(`${w.route}: ${Math.round(w.rps).toLocaleString('en-US')} req/s, ${Math.round(w.cpuUs)} µs process CPU per request (all threads)`, analyse(kept, ROOT, w, top)));
    }
    const md = parts.join('\n');
    console.log(md);
    writeFileSync(path.join(outDir, `${targetId}.md`), md);
    console.error(`wrote ${path.relative(ROOT, kept)} and ${targetId}.md`);
  } finally {
    stub.server.close();
  }
}

await runMain(main, async () => {
  if (target) await stop(target.child);
  if (redis) await redis.close(target?.redisPrefix ? [target.redisPrefix] : []);
  await stopAll();
  rmSync(tmp, { recursive: true, force: true });
});
