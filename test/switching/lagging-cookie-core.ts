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
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';

/**
 * Opens the core before the suite's tests and closes it after them; call inside `describe`.
 * `env` adds to its configuration (Redis: its REDIS_KEY_PREFIX's keys are removed after).
 */
export function laggingCookieCore(env: Record<string, string> = {}): () => Core {
  let dir: string;
  let core: Core | undefined;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-lagging-cookie-'));
    const base = { DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'none', SESSION_SECRETS: randomBytes(32).toString('base64url'), MIRROR_FLUSH_MS: '10000' };
    core = await openCore(loadConfig({ ...base, ...env, SESSION_STORAGE: 'cookie' }), pino({ level: 'silent' }));
  });
  after(async () => {
    const keys = env.REDIS_KEY_PREFIX && core?.redis ? await core.redis.keys(`${env.REDIS_KEY_PREFIX}*`) : [];
    if (keys.length) await core!.redis!.del(...keys);
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

/**
 * Holds the cookie store's next move in — a move into the cookie after it wrote its directory
 * entry, before it seals — until `release`: `reached` once it is held. `restore` puts the store's
 * own `moveIn` back (if never called) and releases.
 */
export function holdNextSeal(core: Core) {
  const sealing = (core.backends.stores.cookie as unknown as MirroredStore).primary;
  const moveIn = sealing.moveIn.bind(sealing);
  let reached!: () => void;
  const atSeal = new Promise<void>((resolve) => (reached = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  sealing.moveIn = async (record, readVersion) => {
    sealing.moveIn = moveIn;
    reached();
    await released;
    return moveIn(record, readVersion);
  };
  return {
    reached: atSeal,
    release,
    restore: () => {
      sealing.moveIn = moveIn;
      release();
    },
  };
}
