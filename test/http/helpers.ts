/**
 * Shared pieces of the black-box HTTP contract tests (../shared/API.md): the error shape every
 * failure must have, raw requests that bypass fetch's URL normalisation, a bounded wait, and
 * the environment for each session backend.
 */
import { expect } from 'chai';
import { request as httpRequest } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { Reply } from '../support/http-client.js';

export const BACKENDS = ['database', 'cookie', 'redis'] as const;
export type Backend = (typeof BACKENDS)[number];

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

/** The machine's Redis (CI starts it on 6379), under a key prefix nobody else uses. */
export function redisEnv(): Record<string, string> {
  return { REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `sbt:${randomBytes(6).toString('hex')}:` };
}

/** Environment for an app whose new sessions go to `backend`. */
export function backendEnv(backend: Backend, extra: Record<string, string> = {}): Record<string, string> {
  return { SESSION_STORAGE: backend, ...redisEnv(), ...extra };
}

export function uniqueEmail(tag = 'user'): string {
  return `${tag}-${randomBytes(6).toString('hex')}@example.com`;
}

export const GOOD_PASSWORD = 'correct horse battery staple';

/** Signs of a leaked stack trace or internal detail in a response body. */
const LEAKS = [/\bat [\w$.<>]+ \(/, /\bat (file|node):/, /\/work\//, /node_modules/, /\.ts:\d+/, /\.js:\d+/, /SequelizeError|SQLITE_|ECONNREFUSED|TypeError|ReferenceError|SyntaxError/];

export function expectNoLeak(text: string, what = 'body'): void {
  for (const pattern of LEAKS) expect(text, `${what} leaks internals (${pattern})`).not.to.match(pattern);
}

export interface ErrorBody {
  error: { code: string; message: string; [k: string]: unknown };
  [k: string]: unknown;
}

/** `{error: {code, message}}` with a snake_case code, and nothing internal in it. */
export function expectErrorShape(body: unknown, text: string, context = ''): ErrorBody {
  expect(body, `${context} error body is JSON: ${text.slice(0, 300)}`).to.be.an('object');
  const error = (body as { error?: unknown }).error as { code?: unknown; message?: unknown } | undefined;
  expect(error, `${context} has an error object: ${text.slice(0, 300)}`).to.be.an('object');
  expect(error!.code, `${context} error.code`).to.be.a('string').and.match(/^[a-z][a-z0-9]*(_[a-z0-9]+)*$/);
  expect(error!.message, `${context} error.message`).to.be.a('string').and.not.equal('');
  expectNoLeak(text, `${context} body`);
  return body as ErrorBody;
}

/** Asserts the reply is the documented error: status, code, shape. */
export function expectError(reply: Reply, status: number, code?: string): ErrorBody {
  const context = `${status}${code ? ' ' + code : ''}`;
  expect(reply.status, `status (${reply.text.slice(0, 300)})`).to.equal(status);
  expect(reply.headers.get('content-type') ?? '', 'error content type').to.match(/application\/json/);
  const body = expectErrorShape(reply.body, reply.text, context);
  if (code) expect(body.error.code).to.equal(code);
  return body;
}

/** Fails when any key anywhere in `value` looks like a password or its hash. */
export function expectNoSecrets(value: unknown, path = '$'): void {
  if (Array.isArray(value)) value.forEach((v, i) => expectNoSecrets(v, `${path}[${i}]`));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      expect(k, `${path}.${k}`).not.to.match(/password|hash|secret/i);
      expectNoSecrets(v, `${path}.${k}`);
    }
  }
}

/** The Set-Cookie line for `name` in a reply, if any. */
export function setCookieFor(reply: Reply, name = 'sid'): string | undefined {
  return reply.headers.getSetCookie().find((line) => line.startsWith(`${name}=`));
}

/** Cookie attributes, lower-cased names → values (`true` for flags). */
export function cookieAttributes(line: string): Map<string, string | true> {
  const attrs = new Map<string, string | true>();
  for (const part of line.split(';').slice(1)) {
    const eq = part.indexOf('=');
    if (eq === -1) attrs.set(part.trim().toLowerCase(), true);
    else attrs.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return attrs;
}

export interface RawReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  body: unknown;
}

/**
 * One HTTP request with the path, method, headers and body sent exactly as given (fetch would
 * normalise `..`, refuse some methods and headers, and add its own).
 */
export function raw(baseUrl: string, method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer): Promise<RawReply> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method, path, headers: { Connection: 'close', ...headers, ...(body !== undefined ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
        });
        res.on('error', reject);
      },
    );
    let responded = false;
    let failure: Error | undefined;
    req.on('response', () => (responded = true));
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    // The server may answer (413, 415) before it has read a large body and close the socket:
    // a write error then is not a failure as long as the answer arrived.
    req.on('error', (err: NodeJS.ErrnoException) => {
      failure = err;
      if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
    });
    req.on('close', () => {
      if (!responded) reject(failure ?? new Error(`${method} ${path}: connection closed without an answer`));
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A seeded PRNG (mulberry32), so a failing fuzz run can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
