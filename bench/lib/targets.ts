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
  /** Node script, relative to the repository root. */
  script: string;
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
}

export function targetDefs(c: TargetContext): TargetDef[] {
  const prefix = (tag: string) => `bench:${c.runId}:${tag}:`;
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
  const sb = (backend: 'redis' | 'cookie' | 'database'): TargetDef => {
    const dir = path.join(c.tmp, `sb-${backend}`);
    const adminToken = randomBytes(24).toString('base64url');
    return {
      id: `sb-${backend}`,
      label: `Switchboard, ${backend} backend`,
      group: 'switchboard',
      script: 'dist/src/server.js',
      tsx: false,
      backend,
      adminToken,
      env: {
        SESSION_STORAGE: backend,
        DATABASE_URL: `sqlite:${path.join(dir, 'sb.sqlite')}`,
        DATA_DIR: dir,
        REDIS_URL: c.redisUrl,
        // Switchboard allows at most 32 characters here.
        REDIS_KEY_PREFIX: `b${c.runId.slice(0, 12)}${backend[0]}:`,
        LOG_LEVEL: 'warn',
        SESSION_SECRETS: randomBytes(32).toString('base64url'),
        ADMIN_TOKEN: adminToken,
        ...(c.noUnleash
          ? {}
          : { UNLEASH_URL: `http://127.0.0.1:${c.unleashPort}/${backend}/api`, UNLEASH_API_TOKEN: 'default:development.bench', UNLEASH_REFRESH_INTERVAL_MS: '2000' }),
        ...c.sbEnv,
      },
      routes: SB_ROUTES,
      redisPrefix: `b${c.runId.slice(0, 12)}${backend[0]}:`,
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
  ];
}

export async function startTarget(def: TargetDef, opts: { root: string; cpu: string; tmp: string; nodeArgs?: string[] }): Promise<RunningTarget> {
  const port = await freePort();
  if (def.backend) mkdirSync(def.env.DATA_DIR!, { recursive: true });
  const args = [...(opts.nodeArgs ?? []), ...(def.tsx ? ['--import', 'tsx', def.script] : [def.script])];
  const child = spawnPinned(def.id, opts.cpu, process.execPath, args, {
    cwd: opts.root,
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
