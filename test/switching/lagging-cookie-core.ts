/**
 * An in-process core on the cookie backend, SQLite, no Redis, whose database copies are written
 * behind late (MIRROR_FLUSH_MS 10 s): the directory entry lags behind the cookie's seals, as it
 * does for a moment under load. For tests that hold one step of a move and run another request
 * in it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';

/** Opens the core before the suite's tests and closes it after them; call inside `describe`. */
export function laggingCookieCore(): () => Core {
  let dir: string;
  let core: Core | undefined;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-lagging-cookie-'));
    const env = { DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'none', SESSION_SECRETS: randomBytes(32).toString('base64url'), MIRROR_FLUSH_MS: '10000' };
    core = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'cookie' }), pino({ level: 'silent' }));
  });
  after(async () => {
    await core?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return () => core!;
}

/** `read` with preferences changed by `patch`, as PATCH /api/session changes them. */
export function patched(read: SessionRecord, patch: Record<string, unknown>) {
  const changed: SessionRecord = { ...read, data: { ...read.data, preferences: { ...(read.data.preferences as object), ...patch } }, version: read.version + 1, lastActivity: Date.now() };
  return { changed, concurrency: { readVersion: read.version, changedKeys: new Set(['preferences']), patches: new Map([['preferences', patch]]) } };
}
