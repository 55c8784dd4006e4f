/** Medians, ratios, the targets, and the markdown that shows them. */
import type { Sample } from './load.js';
import type { KeyUsage } from './redis.js';
import { ROUTES, type Group, type Route } from './targets.js';

export interface TargetInfo {
  id: string;
  label: string;
  group: Group;
}

export interface Cell {
  target: string;
  route: Route;
  runs: number;
  rps: number;
  rpsMin: number;
  rpsMax: number;
  p50ms: number;
  p99ms: number;
  p99Min: number;
  p99Max: number;
  cpuUs: number;
  /**
   * The least CPU per request of any round. On the shared VMs here the CPU time of the same work
   * jumps by up to 2× for seconds at a time (docs/performance.md, tenth round); noise only ever
   * adds, so the best round is the estimate of what a request costs that the swings touch least.
   */
  cpuUsBest: number;
  serverCpu: number;
  loadCpu: number;
  serverShare: number;
  loadAvg: number;
  errors: number;
}

export interface RedisBytes {
  target: string;
  sessions: number;
  /** All of the target's keys divided by its sessions (Switchboard: session hash + per-user index). */
  bytesPerSession: number;
  /** The session key alone. */
  sessionKeyBytes: number;
  sessionKeyPayload: number;
  keys: Array<Pick<KeyUsage, 'type' | 'bytes' | 'payload'> & { kind: string }>;
}

export interface Check {
  what: string;
  measured: string;
  /** The same ratio from server CPU time per request (robust to other load on the machine). */
  byCpu?: string;
  /** The same ratio from each side's best round (see `Cell.cpuUsBest`). */
  byBestCpu?: string;
  goal: string;
  met: boolean | undefined;
}

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function cells(samples: Sample[]): Map<string, Cell> {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = `${s.target}/${s.route}`;
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  const out = new Map<string, Cell>();
  for (const [k, ss] of groups) {
    const rps = ss.map((s) => s.rps);
    const p99 = ss.map((s) => s.latency_us.p99 / 1000);
    out.set(k, {
      target: ss[0]!.target,
      route: ss[0]!.route,
      runs: ss.length,
      rps: median(rps),
      rpsMin: Math.min(...rps),
      rpsMax: Math.max(...rps),
      p50ms: median(ss.map((s) => s.latency_us.p50 / 1000)),
      p99ms: median(p99),
      p99Min: Math.min(...p99),
      p99Max: Math.max(...p99),
      cpuUs: median(ss.map((s) => s.cpuUsPerRequest)),
      cpuUsBest: Math.min(...ss.map((s) => s.cpuUsPerRequest)),
      serverCpu: median(ss.map((s) => s.serverCpuBusy)),
      loadCpu: median(ss.map((s) => s.loadCpuBusy)),
      serverShare: median(ss.map((s) => s.serverShare)),
      loadAvg: median(ss.map((s) => s.loadAvg)),
      errors: ss.reduce((a, s) => a + s.errorCount, 0),
    });
  }
  return out;
}

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–');
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN);
const x = (r: number) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');

export function checks(c: Map<string, Cell>, bytes: RedisBytes[]): Check[] {
  const rps = (t: string, r: Route) => c.get(`${t}/${r}`)?.rps ?? NaN;
  const cpu = (t: string, r: Route) => c.get(`${t}/${r}`)?.cpuUs ?? NaN;
  const bestCpu = (t: string, r: Route) => c.get(`${t}/${r}`)?.cpuUsBest ?? NaN;
  const out: Check[] = [];
  const atLeast = (what: string, a: string, b: string, route: Route, goal: number) => {
    const r = ratio(rps(a, route), rps(b, route));
    out.push({ what, measured: x(r), byCpu: x(ratio(cpu(b, route), cpu(a, route))), byBestCpu: x(ratio(bestCpu(b, route), bestCpu(a, route))), goal: `≥ ${goal}×`, met: Number.isFinite(r) ? r >= goal : undefined });
  };
  atLeast('Redis backend read vs koa-session + ioredis', 'sb-redis', 'koa-session-ioredis', 'read', 1.5);
  atLeast('Redis backend write vs koa-session + ioredis', 'sb-redis', 'koa-session-ioredis', 'write', 1.5);
  atLeast('cookie backend read vs koa-session cookie', 'sb-cookie', 'koa-session-cookie', 'read', 1.5);
  atLeast('cookie backend write vs koa-session cookie', 'sb-cookie', 'koa-session-cookie', 'write', 1.5);
  atLeast('database (SQLite) backend read vs koa-session + ioredis', 'sb-database', 'koa-session-ioredis', 'read', 0.75);
  const peers = ['koa-session-cookie', 'koa-session-ioredis', 'express-session-redis'];
  for (const route of ['read', 'write'] as const) {
    const best = Math.min(...peers.map((p) => c.get(`${p}/${route}`)?.p99ms ?? Infinity));
    for (const b of ['redis', 'cookie', 'database']) {
      const p99 = c.get(`sb-${b}/${route}`)?.p99ms;
      if (p99 === undefined || !Number.isFinite(best)) continue;
      out.push({ what: `p99 ${route}, ${b} backend vs best peer`, measured: `${fmt(p99, 2)} ms vs ${fmt(best, 2)} ms`, goal: '≤ best peer', met: p99 <= best });
    }
  }
  const sb = bytes.find((b) => b.target === 'sb-redis');
  const cr = bytes.find((b) => b.target === 'express-session-redis');
  if (sb && cr) {
    const r = sb.bytesPerSession / cr.bytesPerSession;
    out.push({ what: 'Redis bytes per session vs connect-redis', measured: `${fmt(sb.bytesPerSession)} B vs ${fmt(cr.bytesPerSession)} B (${(r * 100).toFixed(0)} %)`, goal: '≤ 50 %', met: r <= 0.5 });
  }
  return out;
}

/** Per route: the CPU per request the 1.5× Redis target allows, beside the bare-handler reference and Switchboard. */
export function redisTargetRoom(c: Map<string, Cell>) {
  const cpu = (t: string, r: Route) => c.get(`${t}/${r}`)?.cpuUs ?? NaN;
  return (['read', 'write'] as const)
    .map((route) => ({ route, peer: cpu('koa-session-ioredis', route), allowed: cpu('koa-session-ioredis', route) / 1.5, bare: cpu('koa-raw-ioredis', route), switchboard: cpu('sb-redis', route) }))
    .filter((x) => Number.isFinite(x.peer) && Number.isFinite(x.switchboard));
}

export interface ReportInput {
  title: string;
  command: string;
  machine: Record<string, string>;
  settings: Record<string, string>;
  targets: TargetInfo[];
  routes: Route[];
  samples: Sample[];
  bytes: RedisBytes[];
  notes: string[];
}

export function markdown(r: ReportInput): string {
  const c = cells(r.samples);
  const L: string[] = [];
  const row = (cols: string[]) => L.push(`| ${cols.join(' | ')} |`);
  const head = (cols: string[], align?: string[]) => {
    row(cols);
    row(align ?? cols.map((_, i) => (i === 0 ? '---' : '---:')));
  };
  L.push(`# ${r.title}`, '');
  L.push('```sh', r.command, '```', '');
  L.push(Object.entries(r.machine).map(([k, v]) => `- ${k}: ${v}`).join('\n'), '');
  L.push(Object.entries(r.settings).map(([k, v]) => `- ${k}: ${v}`).join('\n'), '');

  const bare = (route: Route) => c.get(`bare-koa/${route}`)?.rps ?? NaN;
  for (const route of r.routes) {
    L.push(`## ${route}`, '');
    head(['target', 'req/s (median)', 'min–max', '× bare Koa', 'p50 ms', 'p99 ms (median)', 'p99 min–max', 'server CPU µs/req', 'best round', 'server process share of its core', 'others on server core', 'load core busy', 'load avg', 'errors']);
    for (const t of r.targets) {
      const k = c.get(`${t.id}/${route}`);
      if (!k) continue;
      row([
        t.label,
        fmt(k.rps),
        `${fmt(k.rpsMin)}–${fmt(k.rpsMax)}`,
        x(ratio(k.rps, bare(route))),
        fmt(k.p50ms, 2),
        fmt(k.p99ms, 2),
        `${fmt(k.p99Min, 2)}–${fmt(k.p99Max, 2)}`,
        fmt(k.cpuUs, 0),
        fmt(k.cpuUsBest, 0),
        `${fmt(k.serverShare * 100)} %`,
        `${fmt(Math.max(0, k.serverCpu - k.serverShare) * 100)} %`,
        `${fmt(k.loadCpu * 100)} %`,
        fmt(k.loadAvg, 1),
        k.errors ? `**${fmt(k.errors)}**` : '0',
      ]);
    }
    L.push('');
  }

  const peers = r.targets.filter((t) => t.group === 'peer' || t.group === 'reference');
  const sbs = r.targets.filter((t) => t.group === 'switchboard');
  if (sbs.length && peers.length) {
    L.push('## Switchboard ÷ peer (req/s, medians)', '');
    head(['Switchboard', 'route', ...peers.map((p) => p.label)]);
    for (const s of sbs) {
      for (const route of r.routes) {
        const a = c.get(`${s.id}/${route}`)?.rps ?? NaN;
        row([s.label, route, ...peers.map((p) => x(ratio(a, c.get(`${p.id}/${route}`)?.rps ?? NaN)))]);
      }
    }
    L.push('');
    L.push('## Switchboard ÷ peer by server CPU time per request (peer µs ÷ Switchboard µs; less sensitive to other load on the machine)', '');
    head(['Switchboard', 'route', ...peers.map((p) => p.label)]);
    for (const s of sbs) {
      for (const route of r.routes) {
        const a = c.get(`${s.id}/${route}`)?.cpuUs ?? NaN;
        row([s.label, route, ...peers.map((p) => x(ratio(c.get(`${p.id}/${route}`)?.cpuUs ?? NaN, a)))]);
      }
    }
    L.push('');
  }

  if (r.bytes.length) {
    L.push('## Redis memory per session (MEMORY USAGE … SAMPLES 0, right after login, same session content)', '');
    head(['target', 'sessions', 'bytes per session (all keys)', 'session key bytes', 'session key payload (chars)', 'keys per session']);
    for (const b of r.bytes) {
      const label = r.targets.find((t) => t.id === b.target)?.label ?? b.target;
      const kinds = b.keys.map((k) => `${k.kind} (${k.type}) ${fmt(k.bytes)} B`).join(', ');
      row([label, fmt(b.sessions), fmt(b.bytesPerSession), fmt(b.sessionKeyBytes), fmt(b.sessionKeyPayload), kinds]);
    }
    L.push('');
  }

  const cs = checks(c, r.bytes);
  if (cs.length) {
    L.push('## Targets (issue 6)', '');
    head(['target', 'measured (req/s ratio)', 'same ratio by server CPU/request', 'by CPU/request, best rounds', 'goal', 'met'], ['---', '---:', '---:', '---:', '---:', ':---:']);
    for (const k of cs) row([k.what, k.measured, k.byCpu ?? '', k.byBestCpu ?? '', k.goal, k.met === undefined ? '–' : k.met ? 'yes' : '**no**']);
    L.push('');
  }
  const room = redisTargetRoom(c);
  if (room.length) {
    // What moves most between machines is the cost of a Redis round trip, for every target alike;
    // this shows how much the 1.5× target leaves above a handler that does nothing but the GET.
    L.push('### The Redis targets in server CPU per request (for scale)', '');
    head(['route', 'koa-session + ioredis', '1.5× target allows', 'Koa + raw ioredis (no session library)', 'Switchboard, redis backend'], ['---', '---:', '---:', '---:', '---:']);
    for (const x of room) row([x.route, `${fmt(x.peer)} µs`, `${fmt(x.allowed)} µs`, `${fmt(x.bare)} µs`, `${fmt(x.switchboard)} µs`]);
    L.push('');
  }
  if (r.notes.length) L.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  return L.join('\n');
}

export { ROUTES };
