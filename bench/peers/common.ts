/**
 * What every peer server shares: where it listens, which Redis it uses, and the session
 * content it keeps — the same application data Switchboard keeps at login (a user object,
 * a CSRF token and a platform id), so Redis bytes per session compare like for like.
 */
import { randomBytes } from 'node:crypto';

export interface BenchUser {
  id: number;
  email: string;
  name: string;
  role: string;
}

export interface SessionContent {
  user: BenchUser;
  csrfToken: string;
  platformId: number | null;
  preferences?: Record<string, unknown>;
}

export const PORT = Number(process.env.PORT ?? 0);
export const HOST = '127.0.0.1';
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
/** Unique per bench run; the runner deletes every key under it at the end. */
export const KEY_PREFIX = process.env.REDIS_KEY_PREFIX ?? 'bench:';
/** Signs cookies (koa-session keys, express-session secret). */
export const SECRET = process.env.BENCH_SECRET ?? randomBytes(32).toString('base64url');
/** One day, the default of koa-session and connect-redis alike. */
export const MAX_AGE_MS = 86_400_000;

/** The login body is `{ id, email, name }`: the runner plays the user directory. */
export function sessionContent(body: unknown): SessionContent | undefined {
  const b = body as Partial<BenchUser> | undefined;
  if (!b || typeof b.id !== 'number' || typeof b.email !== 'string' || typeof b.name !== 'string') return undefined;
  return { user: { id: b.id, email: b.email, name: b.name, role: 'user' }, csrfToken: randomBytes(16).toString('base64url'), platformId: null };
}

/** The write body is `{ preferences: { counter: N } }`. */
export function preferencesOf(body: unknown): Record<string, unknown> | undefined {
  const p = (body as { preferences?: unknown } | undefined)?.preferences;
  return p && typeof p === 'object' && !Array.isArray(p) ? (p as Record<string, unknown>) : undefined;
}

// Exit through process.exit so that `node --cpu-prof` writes its profile (bench/profile.ts).
process.once('SIGTERM', () => process.exit(0));

export function listening(name: string) {
  return () => console.log(`${name} listening on http://${HOST}:${PORT}`);
}
