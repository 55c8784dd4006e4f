/**
 * A move out of Redis leaves the Redis copy where saves reached it after the move read the
 * session, and takes it once its moved copy is written (SessionBackends.takeLeftBehind). A move
 * back into Redis in between — another request of the session, told Redis, moving the moved copy
 * it read — wrote over that copy: its version is 1,024 past anything the copy left behind reaches
 * (MOVE_OUT_OF_REDIS_STEP), so the move in took it for an older one. The take then found Redis
 * holding the session again, put back only its own request's changes, and the saves in the copy
 * it had come to take, answered 200, were gone for good. (Found with five writers and a reader
 * per session while the flag flipped every 100–150 ms among all three backends: the last changes
 * of two writers, about one run in three.)
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { makeRecord } from '../sessions/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { patched } from './lagging-cookie-core.js';

describe('a move into Redis while a move out of Redis has yet to take the copy left there', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let dir: string;
  let core: Core;
  const prefix = `move-in-during-take-${randomBytes(4).toString('hex')}:`;

  before(async () => {
    db = await createTestDatabase('switchboard_move_in_during_take');
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-move-in-during-take-'));
    const env = { DATA_DIR: dir, DATABASE_URL: db.url, REDIS_KEY_PREFIX: prefix, SESSION_SECRETS: randomBytes(32).toString('base64url'), STORE_TIMEOUT_MS: '250' };
    core = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'redis' }), pino({ level: 'silent' }));
  });
  after(async () => {
    const keys = core?.redis ? await core.redis.keys(`${prefix}*`) : [];
    if (keys.length) await core.redis!.del(...keys);
    await core?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('does not write over the saves that copy holds', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
    // A GET reads the session in Redis (counter 0); the flag now says database.
    const read = (await core.backends.open(created.cookieValue))!;
    // The writer's PATCH, told Redis a moment before, saves counter 1 there: answered 200.
    const one = patched(read, { counter: 1 });
    expect((await core.backends.update(one.changed, 'save', one.concurrency))?.record.backend).to.equal('redis');

    // The GET moves the session to the database (counter 0), and finds counter 1 left in Redis:
    // held there, before it takes that copy.
    const redis = core.backends.stores.redis;
    const evict = redis.evict.bind(redis);
    let held: () => void = () => {};
    const holding = new Promise<void>((resolve) => {
      let first = true;
      redis.evict = async (r) => {
        const removed = await evict(r);
        if (first) {
          first = false;
          resolve();
          await new Promise<void>((release) => (held = release));
        }
        return removed;
      };
    });
    let moveIn: Promise<Written | undefined> | undefined;
    try {
      const moveOut = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
      await holding;
      // Another request, told Redis, moves back what it read of the moved copy (a move retried
      // after it found the session moved: `current`).
      const moved = (await core.backends.directory.load(created.record.id))!;
      expect(moved.data.preferences).to.deep.equal({ counter: 0 });
      moveIn = core.backends.migrate(moved, 'redis', 'flag', undefined, Date.now());
      // The take is let go once the move in has answered, or has stopped to wait for it: not a
      // deadline on the machine's speed (a slower one only lets the move in answer later).
      await Promise.race([moveIn, new Promise((r) => setTimeout(r, 250))]);
      held();
      await Promise.all([moveOut, moveIn]);
    } finally {
      redis.evict = evict;
      held();
    }
    const now = await core.backends.open(core.backends.cookieValue('redis', created.record.id));
    expect(now?.data.preferences, 'counter 1 was answered 200').to.deep.equal({ counter: 1 });
  });
});
