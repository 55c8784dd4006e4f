/**
 * The servers under test and how each one is driven: its process, its login (excluded from
 * throughput), and its three measured routes.
 *
 *   route   peers                 Switchboard
 *   read    GET  /read            GET   /api/session
 *   write   POST /write           PATCH /api/session  {"preferences":{"counter":N}} + X-CSRF-Token
 *   anon    GET  /anon            GET   /healthz
 *   login   POST /login           POST  /api/signup   (argon2id: seconds for a few dozen sessions)
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { lastLines, spawnPinned, type Child } from './processes.js';
import { freePort } from './redis.js';

export const ROUTES = ['read', 'write', 'anon'] as const;
export type Route = (typeof ROUTES)[number];

export interface RouteSpec {
  method: 'GET' | 'POST' | 'PATCH';
  path: string;
  write?: boolean;
  session: boolean;
}

export type Group = 'ceiling' | 'peer' | 'reference' | 'switchboard';

export interface Login {
  cookie: string;
  csrf: string;
}

export interface TargetDef {
  id: string;
  label: string;
  group: Group;
  /** Node script, relative to `cwd` (default: the repository root). */
  script: string;
  /** Where the server runs: `--sb-root` runs Switchboard from another checkout (a branch, a prototype). */
  cwd?: string;
  /** Run through tsx (the TypeScript peers); Switchboard runs its tsc build. */
  tsx: boolean;
  env: Record<string, string>;
  routes: Record<Route, RouteSpec>;
  /** Prefix of the target's Redis keys, when it keeps sessions in Redis. */
  redisPrefix?: string;
  /** The backend, for Switchboard targets. */
  backend?: 'redis' | 'cookie' | 'database';
  adminToken?: string;
}

export interface RunningTarget extends TargetDef {
  port: number;
  base: string;
  child: Child;
}

/** A current desktop Chrome: Switchboard stores the User-Agent with each session, the peers do not. */
export const USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';

const PEER_ROUTES: Record<Route, RouteSpec> = {
  read: { method: 'GET', path: '/read', session: true },
  write: { method: 'POST', path: '/write', write: true, session: true },
  anon: { method: 'GET', path: '/anon', session: false },
};
const SB_ROUTES: Record<Route, RouteSpec> = {
  read: { method: 'GET', path: '/api/session', session: true },
  write: { method: 'PATCH', path: '/api/session', write: true, session: true },
  anon: { method: 'GET', path: '/healthz', session: false },
};

export interface TargetContext {
  runId: string;
  redisUrl: string;
  unleashPort: number;
  tmp: string;
  /** Extra Switchboard environment (KEY=VALUE), after the bench's own. */
  sbEnv: Record<string, string>;
  /** Run Switchboard without the Unleash stub (flag from SESSION_STORAGE only). */
  noUnleash: boolean;
  /** The Switchboard checkout to run (its dist/src/server.js); default the repository itself. */
  sbRoot?: string;
  /** More Switchboard checkouts to measure side by side (`--compare label=DIR`): targets `sb-<backend>@<label>`. */
  variants?: Array<{ label: string; root: string }>;
}

export function targetDefs(c: TargetContext): TargetDef[] {
  // Short prefixes of equal length for every target (15-16 characters), so key names weigh
  // the same in the bytes-per-session comparison; unique per run, deleted at the end.
  const short: Record<string, string> = { 'koa-session-ioredis': 'ki', 'express-session-redis': 'cr', 'koa-raw-ioredis': 'kr' };
  const prefix = (id: string) => `b${c.runId.slice(0, 12)}${short[id] ?? id.slice(0, 2)}:`;
  const peer = (id: string, label: string, group: Group, script: string, redis: boolean): TargetDef => ({
    id,
    label,
    group,
    script: `bench/peers/${script}`,
    tsx: true,
    env: redis ? { REDIS_URL: c.redisUrl, REDIS_KEY_PREFIX: prefix(id) } : {},
    routes: PEER_ROUTES,
    redisPrefix: redis ? prefix(id) : undefined,
  });
  const sb = (backend: 'redis' | 'cookie' | 'database', variant?: { label: string; root: string; n: number }): TargetDef => {
    const id = `sb-${backend}${variant ? `@${variant.label}` : ''}`;
    const dir = path.join(c.tmp, id.replace(/[^\w-]/g, '_'));
    const adminToken = randomBytes(24).toString('base64url');
    const keyPrefix = `b${c.runId.slice(0, 12)}${backend[0]}${variant ? variant.n : ''}:`;
    return {
      id,
      label: `Switchboard, ${backend} backend${variant ? ` @${variant.label}` : ''}`,
      group: 'switchboard',
      script: 'dist/src/server.js',
      cwd: variant ? variant.root : c.sbRoot,
      tsx: false,
      backend,
      adminToken,
      env: {
        SESSION_STORAGE: backend,
        DATABASE_URL: `sqlite:${path.join(dir, 'sb.sqlite')}`,
        DATA_DIR: dir,
        REDIS_URL: c.redisUrl,
        // Switchboard allows at most 32 characters here.
        REDIS_KEY_PREFIX: keyPrefix,
        LOG_LEVEL: 'warn',
        SESSION_SECRETS: randomBytes(32).toString('base64url'),
        ADMIN_TOKEN: adminToken,
        ...(c.noUnleash
          ? {}
          : { UNLEASH_URL: `http://127.0.0.1:${c.unleashPort}/${backend}/api`, UNLEASH_API_TOKEN: 'default:development.bench', UNLEASH_REFRESH_INTERVAL_MS: '2000' }),
        ...c.sbEnv,
      },
      routes: SB_ROUTES,
      redisPrefix: keyPrefix,
    };
  };
  return [
    peer('bare-koa', 'bare Koa (ceiling)', 'ceiling', 'bare-koa.ts', false),
    peer('koa-session-cookie', 'koa-session, cookie mode', 'peer', 'koa-session-cookie.ts', false),
    peer('koa-session-ioredis', 'koa-session + ioredis store', 'peer', 'koa-session-ioredis.ts', true),
    peer('express-session-redis', 'express-session + connect-redis', 'peer', 'express-session-redis.ts', true),
    peer('koa-raw-ioredis', 'reference: Koa + raw ioredis, no session library', 'reference', 'koa-raw-ioredis.ts', true),
    sb('redis'),
    sb('cookie'),
    sb('database'),
    ...(c.variants ?? []).flatMap((v, i) => (['redis', 'cookie', 'database'] as const).map((b) => sb(b, { ...v, n: i + 1 }))),
  ];
}

export async function startTarget(def: TargetDef, opts: { root: string; cpu: string; tmp: string; nodeArgs?: string[] }): Promise<RunningTarget> {
  const port = await freePort();
  if (def.backend) mkdirSync(def.env.DATA_DIR!, { recursive: true });
  const args = [...(opts.nodeArgs ?? []), ...(def.tsx ? ['--import', 'tsx', def.script] : [def.script])];
  const child = spawnPinned(def.id, opts.cpu, process.execPath, args, {
    cwd: def.cwd ?? opts.root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', HOST: '127.0.0.1', PORT: String(port), ...def.env },
    log: path.join(opts.tmp, `${def.id}.log`),
  });
  const t: RunningTarget = { ...def, port, base: `http://127.0.0.1:${port}`, child };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.proc.exitCode !== null) throw new Error(`${def.id} exited (${child.proc.exitCode}):\n${lastLines(child.log)}`);
    try {
      const res = await fetch(t.base + def.routes.anon.path);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${def.id} not ready after 30 s:\n${lastLines(child.log)}`);
    await sleep(100);
  }
  if (def.backend && def.env.UNLEASH_URL) await waitForFlag(t);
  return t;
}

/** Until the Unleash client holds the flag state: only then is every request's backend chosen by the flag. */
async function waitForFlag(t: RunningTarget) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const res = await fetch(`${t.base}/api/admin/flags`, { headers: { Authorization: `Bearer ${t.adminToken}` } });
    const body = (await res.json()) as { unleash?: { hasState?: boolean; reachable?: boolean } };
    if (body.unleash?.hasState && body.unleash.reachable) return;
    if (Date.now() > deadline) throw new Error(`${t.id}: the Unleash stub's flag never arrived: ${JSON.stringify(body)}`);
    await sleep(200);
  }
}

function cookieHeader(res: Response): string {
  return res.headers
    .getSetCookie()
    .map((c) => c.split(';')[0]!)
    .join('; ');
}

/** `cookie` with the values of `res`'s Set-Cookie headers applied, as a browser keeps them. */
function applySetCookie(cookie: string, res: Response): string {
  const jar = new Map(cookie.split('; ').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  for (const sc of res.headers.getSetCookie()) {
    const kv = sc.split(';')[0]!;
    const name = kv.slice(0, kv.indexOf('='));
    const value = kv.slice(kv.indexOf('=') + 1);
    const expired = /expires=Thu, 01 Jan 1970/i.test(sc) || value === '';
    if (expired) jar.delete(name);
    else jar.set(name, value);
  }
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

/**
 * One read per session, keeping any cookie the server sets, as a browser would. The load
 * generator replays fixed cookies; without this, a backend that refreshes its cookie (the
 * sealed cookie on its once-a-minute idle-expiry touch) would see a stale cookie — and do the
 * touch — on every request after the first minute, which no browser causes. Run before every
 * measured run, so each session is touched at most once per minute, as in real use.
 */
export async function refreshSessions(t: RunningTarget, list: Login[]): Promise<number> {
  let changed = 0;
  for (const s of list) {
    const res = await fetch(t.base + t.routes.read.path, { headers: { Cookie: s.cookie, 'User-Agent': USER_AGENT } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${t.id}: session refresh answered ${res.status}`);
    const next = applySetCookie(s.cookie, res);
    if (next !== s.cookie) {
      s.cookie = next;
      changed++;
    }
  }
  return changed;
}

/** Creates session number `i` (1-based): the same user content on every target. */
export async function login(t: RunningTarget, i: number): Promise<Login> {
  const email = `bench-user-${i}@example.com`;
  const name = `Bench User ${i}`;
  const headers = { 'Content-Type': 'application/json', 'User-Agent': USER_AGENT };
  const res = t.backend
    ? await fetch(`${t.base}/api/signup`, { method: 'POST', headers, body: JSON.stringify({ email, name, password: `bench-${randomBytes(12).toString('hex')}` }) })
    : await fetch(`${t.base}/login`, { method: 'POST', headers, body: JSON.stringify({ id: i, email, name }) });
  const body = (await res.json()) as { csrfToken?: string };
  if (!res.ok) throw new Error(`${t.id}: login ${i} answered ${res.status}: ${JSON.stringify(body)}`);
  return { cookie: cookieHeader(res), csrf: body.csrfToken ?? '' };
}

/** One request per route, checked: a route that answers 401 or 403 fast would make a fine-looking number. */
export async function verify(t: RunningTarget, route: Route, s: Login | undefined): Promise<void> {
  const spec = t.routes[route];
  const headers: Record<string, string> = { 'User-Agent': USER_AGENT };
  if (spec.session && s) headers.Cookie = s.cookie;
  let body: string | undefined;
  const counter = 424242;
  if (spec.write) {
    headers['Content-Type'] = 'application/json';
    headers['X-CSRF-Token'] = s?.csrf ?? '';
    body = JSON.stringify({ preferences: { counter } });
  }
  const res = await fetch(t.base + spec.path, { method: spec.method, headers, body });
  const text = await res.text();
  const fail = (why: string) => new Error(`${t.id} ${route}: ${why}; answered ${res.status} ${text.slice(0, 300)}`);
  if (res.status !== 200) throw fail('expected 200');
  const json = JSON.parse(text) as { user?: { email?: string }; preferences?: { counter?: number } };
  if (route === 'read' && !json.user?.email?.startsWith('bench-user-')) throw fail('no user in the answer');
  if (route === 'write' && json.preferences?.counter !== counter) throw fail('the write was not applied');
}
