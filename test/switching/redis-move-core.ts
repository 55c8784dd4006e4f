/**
 * An in-process core on Redis and PostgreSQL (where the flip harnesses found what these tests
 * hold), and the steps the tests of a move out of Redis share: a session read in Redis, then
 * saved there by another request; a move held at one of its Redis evictions, or one of them
 * unanswered.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { ConnectionError } from 'sequelize';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { patched } from './lagging-cookie-core.js';

/** Opens the core (database `switchboard_<name>`) before the suite's tests and closes it after them; call inside `describe`. */
export function redisMoveCore(name: string, settings: Record<string, string> = {}): () => Core {
  let db: TestDatabase;
  let dir: string;
  let core: Core | undefined;
  const prefix = `${name}-${randomBytes(4).toString('hex')}:`;
  before(async () => {
    db = await createTestDatabase(`switchboard_${name.replaceAll('-', '_')}`);
    dir = mkdtempSync(path.join(tmpdir(), `switchboard-${name}-`));
    const env = { DATA_DIR: dir, DATABASE_URL: db.url, REDIS_KEY_PREFIX: prefix, SESSION_SECRETS: randomBytes(32).toString('base64url'), STORE_TIMEOUT_MS: '250', ...settings };
    core = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'redis' }), pino({ level: 'silent' }));
  });
  after(async () => {
    const keys = core?.redis ? await core.redis.keys(`${prefix}*`) : [];
    if (keys.length) await core!.redis!.del(...keys);
    await core?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });
  return () => core!;
}

/**
 * A session in Redis at counter 0, read by a GET (`read`) just before the flag said database;
 * then the writer's PATCH, told Redis a moment before, saves counter 1 there: answered 200.
 */
export async function readThenSavedInRedis(core: Core): Promise<{ id: string; cookieValue: string; read: SessionRecord }> {
  const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
  const read = (await core.backends.open(created.cookieValue))!;
  const one = patched(read, { counter: 1 });
  expect((await core.backends.update(one.changed, 'save', one.concurrency))?.record.backend).to.equal('redis');
  return { id: created.record.id, cookieValue: created.cookieValue, read };
}

/**
 * Holds the `nth` Redis eviction once it has removed what it removes, until released: a move out
 * of Redis evicts what it read (1st), then takes a copy left there (2nd). `restore` puts the
 * store's own evict back and releases.
 */
export function holdRedisEviction(core: Core, nth: number) {
  const redis = core.backends.stores.redis;
  const evict = redis.evict.bind(redis);
  let held: () => void = () => {};
  const reached = new Promise<void>((resolve) => {
    let calls = 0;
    redis.evict = async (r) => {
      const removed = await evict(r);
      if (++calls === nth) {
        resolve();
        await new Promise<void>((release) => (held = release));
      }
      return removed;
    };
  });
  return {
    reached,
    release: () => held(),
    restore: () => {
      redis.evict = evict;
      held();
    },
  };
}

/**
 * The `nth` Redis eviction answered as Redis missing its deadline: a move out of Redis evicts what
 * it read (1st), then takes a copy left there (2nd), which it then tries again at the session's
 * next open (3rd). Not made, or made all the same (`landed`: a stalled Redis runs it when it
 * wakes). `before(n)` runs before the n-th eviction (a tab's save in between). `restore` puts the
 * store's own evict back.
 */
export function unansweredRedisEviction(core: Core, nth: number, options: { landed?: boolean; before?: (n: number) => Promise<void> } = {}) {
  const redis = core.backends.stores.redis;
  const evict = redis.evict.bind(redis);
  let evictions = 0;
  redis.evict = async (r) => {
    // Awaited only when given: a tick more here reorders the move's own steps after it.
    if (options.before) await options.before(++evictions);
    else ++evictions;
    if (evictions !== nth) return evict(r);
    if (options.landed) await evict(r);
    throw new BackendUnavailableError('redis', 'timeout');
  };
  return { evictions: () => evictions, restore: () => (redis.evict = evict) };
}

/**
 * Redis misses the deadline of the next save only: that request fails over to the database, those
 * after it find Redis answering. `restore` if no save came.
 */
export function redisMissesNextSave(core: Core) {
  const guarded = (core.backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;
  const save = guarded.save.bind(guarded);
  guarded.save = async () => {
    guarded.save = save;
    throw new BackendUnavailableError('redis', 'timeout');
  };
  return { restore: () => (guarded.save = save) };
}

/**
 * `request` answered, or stopped to wait for what is held: not a deadline on the machine's speed
 * (on a slower one the request only answers later, and a test misses what it looks for rather
 * than fails wrongly).
 */
export function answeredOrWaiting(request: Promise<unknown>): Promise<unknown> {
  return Promise.race([request, new Promise((r) => setTimeout(r, 250))]);
}

/**
 * The database stalls for the next read of a directory entry (`loadByHash`: a take's first step)
 * until released: what pg does until its query_timeout, for the request that asked. Only that
 * read: the requests a test asks about meanwhile find the database answering.
 */
export function stallNextDirectoryRead(core: Core) {
  return stallNextDirectoryCall(core, 'loadByHash');
}

/** The directory's calls a request may wait for (backends.ts: `this.directory`; a mirrored store's copies). */
type DirectoryCall = 'loadByHash' | 'save' | 'claim' | 'giveBack' | 'upsertMany' | 'moveIn';

/**
 * The database stalls for the next `method` call on the directory (the bare sessions table, also
 * the mirrored stores' copy) until released, as for `stallNextDirectoryRead`: only that call.
 * `landed` settles once the released call has reached the database (a call let go at a deadline
 * that lands late).
 */
export function stallNextDirectoryCall<K extends DirectoryCall>(core: Core, method: K) {
  const directory = core.backends.directory;
  const original = directory[method];
  let held: () => void = () => {};
  let landed: (done: Promise<unknown>) => void = () => {};
  const released = new Promise<void>((resolve) => (held = resolve));
  const reached = new Promise<void>((resolve) => {
    directory[method] = (async (...args: unknown[]) => {
      directory[method] = original;
      resolve();
      await released;
      const done = (original as (...a: unknown[]) => Promise<unknown>).apply(directory, args);
      landed(done);
      return done;
    }) as (typeof directory)[K];
  });
  return {
    reached,
    landed: new Promise<unknown>((resolve) => (landed = (done) => resolve(done.catch((err: unknown) => err)))),
    release: () => held(),
    restore: () => {
      directory[method] = original;
      held();
    },
  };
}

/**
 * `request` answered while what holds the earlier move is held. Settled, or not after 15 s: far
 * past how long a move waits for another (backends.ts, MOVE_WAIT_MS), and short of pg's
 * query_timeout, past which the stall would end on its own.
 */
export async function answeredWhileHeld<T>(request: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const held = new Promise<'held'>((resolve) => (timer = setTimeout(() => resolve('held'), 15_000)));
  try {
    const answer = await Promise.race([request.then((value) => ({ value })), held]);
    expect(answer, 'answered while the earlier move is held on the stalled database').to.not.equal('held');
    return (answer as { value: T }).value;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The database fails the next read of a directory entry (`loadByHash`: a take's first step), as
 * pg does at its query_timeout or with a connection lost; the reads after it find it answering.
 */
export function failNextDirectoryRead(core: Core, error: Error = new ConnectionError(new Error('Query read timeout'))) {
  const directory = core.backends.directory;
  const loadByHash = directory.loadByHash;
  directory.loadByHash = async () => {
    directory.loadByHash = loadByHash;
    throw error;
  };
  return { restore: () => (directory.loadByHash = loadByHash) };
}
