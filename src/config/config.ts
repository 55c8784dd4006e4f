/**
 * Configuration: every setting Switchboard reads, declared once with its default and
 * meaning, parsed and validated once at start. Nothing past start-up reads process.env. The
 * one other read is Node's own UV_THREADPOOL_SIZE (auth/passwords.ts, at import): it sizes
 * libuv's thread pool, which the password hashing must leave room in; it is not ours to parse.
 *
 * `.env.example` lists the same variables; test/config/config.test.ts keeps the two in step.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { withoutPassword } from '../logging/url-password.js';
import { makeDirectory } from './make-directory.js';

export const BACKENDS = ['cookie', 'database', 'redis'] as const;
export type BackendName = (typeof BACKENDS)[number];

// In any letter case: `TRUE` and `False` are what YAML-minded and Windows tools write.
const bool = z
  .string()
  .transform((v) => v.toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0', 'yes', 'no']))
  .transform((v) => ['true', '1', 'yes'].includes(v));
const BOOL_ACCEPTS = 'true or false (also 1/0, yes/no, in any letter case)';
// Plain decimal only: `Number()` would also take 0x50, 1e3 or Infinity, which nobody means here.
const int = (min: number, max: number) => z.string().regex(/^-?\d+$/).transform(Number).pipe(z.number().int().min(min).max(max));
const num = (min: number, max: number) => z.string().regex(/^-?(\d+(\.\d*)?|\.\d+)$/).transform(Number).pipe(z.number().min(min).max(max));
/** A redis:// or rediss:// URL that parses, with a port in range when it names one. */
const isRedisUrl = (v: string) => {
  try {
    const u = new URL(v);
    // The path is the database index, a number ioredis sends as SELECT: anything else fails later, as a Redis error.
    return (u.protocol === 'redis:' || u.protocol === 'rediss:') && u.hostname !== '' && (u.port === '' || Number(u.port) <= 65535) && /^(\/(\d{1,5})?)?$/.test(u.pathname);
  } catch {
    return false;
  }
};
const hostPortList = z
  .string()
  .regex(/^[^,:\s]+:\d+(,[^,:\s]+:\d+)*$/)
  .refine((v) => hostPorts(v)!.every(({ port }) => port >= 1 && port <= 65535));
const optionalString = z.string().min(1).optional();

/** Each entry: variable name → schema (with default) and a one-line description for errors and docs. */
const schema = {
  NODE_ENV: { type: z.enum(['development', 'production', 'test']).default('development'), accepts: 'development, production or test' },
  HOST: { type: z.string().min(1).default('127.0.0.1'), accepts: 'a host name or address' },
  PORT: { type: int(0, 65535).default(3000), accepts: 'a port number 0-65535' },
  DATA_DIR: { type: z.string().min(1).default('./data'), accepts: 'a directory path' },
  LOG_LEVEL: { type: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'), accepts: 'fatal, error, warn, info, debug, trace or silent' },
  TRUST_PROXY: { type: bool.default(false), accepts: BOOL_ACCEPTS },
  REQUEST_TIMEOUT_MS: { type: int(1000, 600_000).default(30_000), accepts: 'milliseconds 1000-600000' },
  SHUTDOWN_DELAY_MS: { type: int(0, 60_000).default(1000), accepts: 'milliseconds 0-60000' },

  SESSION_STORAGE: { type: z.enum(BACKENDS).default('database'), accepts: 'cookie, database or redis' },
  SESSION_FALLBACK: { type: z.enum([...BACKENDS, 'none']).default('database'), accepts: 'cookie, database, redis or none' },
  DATABASE_URL: {
    type: z
      .string()
      .regex(/^(sqlite:.+|postgres(ql)?:\/\/.+)$/)
      .refine((v) => v.startsWith('sqlite:') || URL.canParse(v))
      .default('sqlite:./data/switchboard.sqlite'),
    accepts: 'sqlite:PATH or postgres://user@host:port/db',
  },
  REDIS_URL: { type: z.string().refine((v) => v === 'none' || isRedisUrl(v)).default('redis://127.0.0.1:6379/0'), accepts: 'redis://host:port/db (db a number), rediss://… or none' },
  REDIS_CLUSTER_NODES: { type: hostPortList.optional(), accepts: 'comma-separated host:port list, ports 1-65535' },
  REDIS_SENTINELS: { type: hostPortList.optional(), accepts: 'comma-separated host:port list, ports 1-65535' },
  REDIS_SENTINEL_NAME: { type: z.string().min(1).default('mymaster'), accepts: 'the sentinel master name' },
  REDIS_KEY_PREFIX: { type: z.string().regex(/^[A-Za-z0-9:_-]{0,32}$/).default('sb:'), accepts: 'up to 32 of A-Z a-z 0-9 : _ -' },

  SESSION_SECRETS: { type: z.string().optional(), accepts: 'comma-separated secrets (32 or more characters each recommended)' },
  SESSION_IDLE_TIMEOUT: { type: int(1, 31_536_000).default(7200), accepts: 'seconds, 1-31536000' },
  SESSION_ABSOLUTE_TIMEOUT: { type: int(1, 31_536_000).default(86_400), accepts: 'seconds, 1-31536000' },
  SESSION_TOUCH_INTERVAL: { type: int(0, 86_400).optional(), accepts: 'seconds between idle-expiry refreshes, 0-86400 and less than SESSION_IDLE_TIMEOUT' },
  SESSION_COOKIE_NAME: { type: z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/).default('sid'), accepts: 'a cookie name (RFC 6265 token)' },
  COOKIE_SECURE: { type: bool.optional(), accepts: BOOL_ACCEPTS },
  SESSION_MAX_PER_USER: { type: int(0, 10_000).default(0), accepts: 'a whole number, 0 for no limit' },
  MIRROR_FLUSH_MS: { type: int(0, 10_000).default(100), accepts: 'milliseconds 0-10000, 0 to write through' },
  SESSION_ENCRYPT_AT_REST: { type: bool.default(false), accepts: BOOL_ACCEPTS },

  STORE_TIMEOUT_MS: { type: int(1, 10_000).default(100), accepts: 'milliseconds, 1-10000' },
  LAST_RESORT_TIMEOUT_MS: { type: int(1, 60_000).default(1000), accepts: 'milliseconds, 1-60000' },
  BREAKER_FAILURE_THRESHOLD: { type: int(1, 1000).default(5), accepts: 'consecutive failures, 1-1000' },
  BREAKER_HALF_OPEN_AFTER_MS: { type: int(10, 600_000).default(2000), accepts: 'milliseconds 10-600000' },
  SYNC_INTERVAL_MS: { type: int(100, 5000).default(1000), accepts: 'milliseconds 100-5000 (admin override and revocation polling)' },

  ROLLBACK_ENABLED: { type: bool.default(true), accepts: BOOL_ACCEPTS },
  ROLLBACK_ERROR_RATE: { type: num(0, 1).default(0.05), accepts: 'a ratio between 0 and 1' },
  ROLLBACK_LATENCY_FACTOR: { type: num(1, 1000).default(2), accepts: 'a factor 1-1000' },
  ROLLBACK_LATENCY_FLOOR_MS: { type: num(0, 60_000).default(10), accepts: 'milliseconds 0-60000' },
  ROLLBACK_WINDOW_SECONDS: { type: int(1, 3600).default(60), accepts: 'seconds 1-3600' },
  ROLLBACK_MIN_SAMPLES: { type: int(1, 1_000_000).default(200), accepts: 'a whole number 1-1000000' },

  UNLEASH_URL: { type: z.string().url().regex(/^https?:\/\//).optional(), accepts: 'the Unleash API URL, e.g. http://127.0.0.1:4242/api' },
  UNLEASH_API_TOKEN: { type: optionalString, accepts: 'a client/backend API token' },
  UNLEASH_APP_NAME: { type: z.string().min(1).default('switchboard'), accepts: 'an application name' },
  UNLEASH_REFRESH_INTERVAL_MS: { type: int(500, 600_000).default(2000), accepts: 'milliseconds 500-600000' },

  ADMIN_TOKEN: { type: z.string().regex(/^\S+$/).optional(), accepts: 'a bearer token without spaces (16 or more characters recommended)' },

  LOGIN_MAX_FAILURES: { type: int(1, 10_000).default(10), accepts: 'failed logins per account and address before 429, 1-10000' },
  LOGIN_MAX_FAILURES_PER_IP: { type: int(1, 100_000).default(300), accepts: 'failed logins per address before 429, 1-100000' },
  LOGIN_MAX_FAILURES_PER_ACCOUNT: { type: int(1, 100_000).default(100), accepts: 'failed logins per account from all addresses before 429, 1-100000' },
  LOGIN_FAILURE_WINDOW: { type: int(1, 86_400).default(900), accepts: 'seconds 1-86400' },
  PASSWORD_MIN_LENGTH: { type: int(8, 128).default(8), accepts: 'a length 8-128' },

  PLATFORMS_MAX_PER_USER: { type: int(1, 10_000).default(100), accepts: 'platforms per user, 1-10000' },
} as const;

type Schema = typeof schema;
type Raw = { [K in keyof Schema]: z.output<Schema[K]['type']> };

export interface RedisConnection {
  /** False with REDIS_URL=none: the redis backend is switched off. */
  enabled: boolean;
  url: string;
  cluster?: Array<{ host: string; port: number }>;
  sentinels?: Array<{ host: string; port: number }>;
  sentinelName: string;
  keyPrefix: string;
}

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  logLevel: Raw['LOG_LEVEL'];
  trustProxy: boolean;
  /** A request's headers and body must have arrived within this (408 after). */
  requestTimeoutMs: number;
  /** After SIGTERM, how long the instance goes on serving (/readyz `draining`) before it stops listening. */
  shutdownDelayMs: number;
  databaseUrl: string;
  redis: RedisConnection;
  sessions: {
    storage: BackendName;
    fallback: BackendName | 'none';
    secrets: string[];
    idleTimeoutMs: number;
    absoluteTimeoutMs: number;
    touchIntervalMs: number;
    cookieName: string;
    cookieSecure: boolean;
    maxPerUser: number;
    encryptAtRest: boolean;
    mirrorFlushMs: number;
  };
  stores: { timeoutMs: number; lastResortTimeoutMs: number; breakerThreshold: number; halfOpenAfterMs: number };
  syncIntervalMs: number;
  rollback: { enabled: boolean; errorRate: number; latencyFactor: number; latencyFloorMs: number; windowMs: number; minSamples: number };
  unleash?: { url: string; token?: string; appName: string; refreshIntervalMs: number };
  adminToken?: string;
  login: { maxFailures: number; maxFailuresPerIp: number; maxFailuresPerAccount: number; windowSeconds: number };
  passwordMinLength: number;
  /** Platforms one user may have: a create past it is refused (400), which bounds the lists (API and dashboard). */
  platformsMaxPerUser: number;
  /** Settings that work but are weak: logged once at start. */
  warnings: string[];
}

/** Thrown for a bad setting: its message is the single line printed before exiting. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

function hostPorts(list: string | undefined) {
  return list?.split(',').map((hp) => {
    const [host = '', port = ''] = hp.split(':');
    return { host, port: Number(port) };
  });
}

/** Reads or creates the development secret kept in DATA_DIR, so restarts keep sessions valid. */
function developmentSecret(dataDir: string): string {
  const file = path.join(dataDir, 'session-secret');
  try {
    makeDirectory(dataDir);
    if (existsSync(file)) {
      const secret = readFileSync(file, 'utf8').trim();
      // A truncated or hand-edited file would seal every cookie with a guessable key.
      if (secret.length < 32) throw new ConfigError(`DATA_DIR: ${file} holds a secret shorter than 32 characters; delete it to have a new one made, or set SESSION_SECRETS`);
      return secret;
    }
    const secret = randomBytes(32).toString('base64url');
    writeFileSync(file, secret + '\n', { mode: 0o600 });
    chmodSync(file, 0o600);
    return secret;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(`DATA_DIR must be a directory Switchboard can write (cannot keep the development secret in ${dataDir}: ${code}), or set SESSION_SECRETS`);
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw = {} as Record<string, unknown>;
  for (const [name, { type, accepts }] of Object.entries(schema)) {
    // Surrounding spaces are a slip of the pen, and a blank value means the default.
    const value = env[name]?.trim() || undefined;
    const parsed = (type as z.ZodType).safeParse(value);
    if (!parsed.success) {
      const shown = value === undefined ? 'nothing' : JSON.stringify(name.includes('SECRET') || name.includes('TOKEN') ? '…' : withoutPassword(value));
      throw new ConfigError(`${name} must be ${accepts} (got ${shown})`);
    }
    raw[name] = parsed.data;
  }
  const c = raw as Raw;

  // Weak but workable settings start, with a warning each (a test harness's short token or
  // timeouts must not stop the service); only unusable ones stop start-up.
  const warnings: string[] = [];
  let secrets = c.SESSION_SECRETS?.split(',').map((s) => s.trim()).filter(Boolean) ?? [];
  if (c.SESSION_SECRETS !== undefined && secrets.length === 0) throw new ConfigError('SESSION_SECRETS must be comma-separated secrets (got only commas and spaces)');
  const short = secrets.flatMap((s, i) => (s.length < 32 ? [i + 1] : []));
  // Named by position (1 = the one that seals), never by value.
  if (short.length > 0) warnings.push(`SESSION_SECRETS: secret ${short.map((n) => `#${n}`).join(', ')} of ${secrets.length} is shorter than 32 characters and can be guessed; use 32 or more random characters`);
  if (secrets.length === 0) {
    if (c.NODE_ENV === 'production') throw new ConfigError('SESSION_SECRETS must be set when NODE_ENV=production');
    secrets = [developmentSecret(c.DATA_DIR)];
  }
  if (c.ADMIN_TOKEN !== undefined && c.ADMIN_TOKEN.length < 16) warnings.push('ADMIN_TOKEN: a token shorter than 16 characters can be guessed; use 16 or more random characters');
  // An absolute timeout below the idle one is a plain hard cap: sessions end then, active or not.
  // Activity refreshes the idle expiry at most once per touch interval; one as long as the idle
  // timeout would let an active user's session expire between two refreshes.
  if (c.SESSION_TOUCH_INTERVAL !== undefined && c.SESSION_TOUCH_INTERVAL >= c.SESSION_IDLE_TIMEOUT) {
    throw new ConfigError(`SESSION_TOUCH_INTERVAL must be less than SESSION_IDLE_TIMEOUT (got ${c.SESSION_TOUCH_INTERVAL}, idle ${c.SESSION_IDLE_TIMEOUT})`);
  }
  const touchInterval = c.SESSION_TOUCH_INTERVAL ?? Math.min(60, Math.floor(c.SESSION_IDLE_TIMEOUT / 2));
  if (c.SESSION_COOKIE_NAME.startsWith('__Host-') || c.SESSION_COOKIE_NAME.startsWith('__Secure-')) {
    // Browsers drop such a cookie unless it is Secure: nobody could log in.
    if (!(c.COOKIE_SECURE ?? c.NODE_ENV === 'production')) throw new ConfigError(`SESSION_COOKIE_NAME ${c.SESSION_COOKIE_NAME} needs COOKIE_SECURE=true (browsers refuse the prefix without Secure)`);
  }
  // With a Cluster or Sentinels, REDIS_URL gives only credentials: "none" there would be read as
  // a URL (start-up failed on "Invalid URL", naming nothing) — or mean Redis off, with nodes named.
  const redisNodes = c.REDIS_CLUSTER_NODES ? 'REDIS_CLUSTER_NODES' : c.REDIS_SENTINELS ? 'REDIS_SENTINELS' : undefined;
  if (c.REDIS_URL === 'none' && redisNodes) {
    throw new ConfigError(`REDIS_URL must be unset or a redis:// URL giving credentials when ${redisNodes} is set ("none" switches Redis off: unset ${redisNodes} for that)`);
  }
  if (c.REDIS_URL === 'none' && (c.SESSION_STORAGE === 'redis' || c.SESSION_FALLBACK === 'redis')) {
    throw new ConfigError('REDIS_URL must name a Redis server when SESSION_STORAGE or SESSION_FALLBACK is redis (got "none")');
  }
  // ioredis reaches a Sentinel's master over TLS only with options this app does not set: refused
  // here rather than connected in plain text.
  if (c.REDIS_SENTINELS && c.REDIS_URL.startsWith('rediss:')) {
    throw new ConfigError('REDIS_URL: rediss:// (TLS) is not supported with REDIS_SENTINELS; use redis:// on a private network, or a single TLS endpoint without Sentinels');
  }
  if (c.UNLEASH_URL && !c.UNLEASH_API_TOKEN) {
    throw new ConfigError('UNLEASH_API_TOKEN must be set when UNLEASH_URL is set');
  }

  return {
    host: c.HOST,
    port: c.PORT,
    dataDir: c.DATA_DIR,
    logLevel: c.LOG_LEVEL,
    trustProxy: c.TRUST_PROXY,
    requestTimeoutMs: c.REQUEST_TIMEOUT_MS,
    shutdownDelayMs: c.SHUTDOWN_DELAY_MS,
    databaseUrl: c.DATABASE_URL,
    redis: {
      enabled: c.REDIS_URL !== 'none',
      url: c.REDIS_URL,
      cluster: hostPorts(c.REDIS_CLUSTER_NODES),
      sentinels: hostPorts(c.REDIS_SENTINELS),
      sentinelName: c.REDIS_SENTINEL_NAME,
      keyPrefix: c.REDIS_KEY_PREFIX,
    },
    sessions: {
      storage: c.SESSION_STORAGE,
      fallback: c.SESSION_FALLBACK,
      secrets,
      idleTimeoutMs: c.SESSION_IDLE_TIMEOUT * 1000,
      absoluteTimeoutMs: c.SESSION_ABSOLUTE_TIMEOUT * 1000,
      touchIntervalMs: touchInterval * 1000,
      cookieName: c.SESSION_COOKIE_NAME,
      cookieSecure: c.COOKIE_SECURE ?? c.NODE_ENV === 'production',
      maxPerUser: c.SESSION_MAX_PER_USER,
      encryptAtRest: c.SESSION_ENCRYPT_AT_REST,
      mirrorFlushMs: c.MIRROR_FLUSH_MS,
    },
    stores: { timeoutMs: c.STORE_TIMEOUT_MS, lastResortTimeoutMs: c.LAST_RESORT_TIMEOUT_MS, breakerThreshold: c.BREAKER_FAILURE_THRESHOLD, halfOpenAfterMs: c.BREAKER_HALF_OPEN_AFTER_MS },
    syncIntervalMs: c.SYNC_INTERVAL_MS,
    rollback: {
      enabled: c.ROLLBACK_ENABLED,
      errorRate: c.ROLLBACK_ERROR_RATE,
      latencyFactor: c.ROLLBACK_LATENCY_FACTOR,
      latencyFloorMs: c.ROLLBACK_LATENCY_FLOOR_MS,
      windowMs: c.ROLLBACK_WINDOW_SECONDS * 1000,
      minSamples: c.ROLLBACK_MIN_SAMPLES,
    },
    unleash: c.UNLEASH_URL
      ? { url: c.UNLEASH_URL, token: c.UNLEASH_API_TOKEN, appName: c.UNLEASH_APP_NAME, refreshIntervalMs: c.UNLEASH_REFRESH_INTERVAL_MS }
      : undefined,
    adminToken: c.ADMIN_TOKEN,
    login: { maxFailures: c.LOGIN_MAX_FAILURES, maxFailuresPerIp: c.LOGIN_MAX_FAILURES_PER_IP, maxFailuresPerAccount: c.LOGIN_MAX_FAILURES_PER_ACCOUNT, windowSeconds: c.LOGIN_FAILURE_WINDOW },
    passwordMinLength: c.PASSWORD_MIN_LENGTH,
    platformsMaxPerUser: c.PLATFORMS_MAX_PER_USER,
    warnings,
  };
}

/** The variable names, for the `.env.example` consistency test. */
export const CONFIG_VARIABLES = Object.keys(schema);
