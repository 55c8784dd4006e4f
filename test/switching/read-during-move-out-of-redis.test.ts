/**
 * A move out of Redis writes the copy it read, 1,024 versions on (MOVE_OUT_OF_REDIS_STEP), and
 * only then takes what saves left in Redis since it read it (SessionBackends.takeLeftBehind). A
 * request that read such a save there, and moved the session too while that move was under way,
 * was refused (the moved copy's version is past anything it read), touched the moved copy — still
 * without that save — and answered with the cookie naming it: a read with that cookie showed the
 * value one change older than a change already answered 200, until the take put it back.
 * (Found with readers and a writer sharing one cookie jar while the flag flipped every 150 ms
 * among all three backends: 4–13 such reads a run, against 0–2 before the step.)
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

describe('a read during a move out of Redis that saves reached after the move read it', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let dir: string;
  let core: Core;
  const prefix = `read-during-move-${randomBytes(4).toString('hex')}:`;

  before(async () => {
    db = await createTestDatabase('switchboard_read_during_move');
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-read-during-move-'));
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

  it('does not answer with a cookie whose session lacks the change the request read', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
    const redisCookie = created.cookieValue;
    // A GET reads the session in Redis (counter 0); the flag now says database.
    const firstRead = (await core.backends.open(redisCookie))!;
    // The writer's PATCH, told Redis a moment before, saves counter 1 there: answered 200.
    const one = patched(firstRead, { counter: 1 });
    expect((await core.backends.update(one.changed, 'save', one.concurrency))?.record.backend).to.equal('redis');
    // The other reader's GET reads counter 1 in Redis.
    const secondRead = (await core.backends.open(redisCookie))!;
    expect(secondRead.data.preferences).to.deep.equal({ counter: 1 });

    // The first GET moves the session to the database. Held once it has written the moved copy
    // (counter 0) and evicted what it read from Redis, before it takes the copy left there.
    const redis = core.backends.stores.redis;
    const evict = redis.evict.bind(redis);
    let held: () => void = () => {};
    const holding = new Promise<void>((resolve) => {
      let first = true;
      redis.evict = async (r) => {
        if (!first) return evict(r);
        first = false;
        const removed = await evict(r);
        resolve();
        await new Promise<void>((release) => (held = release));
        return removed;
      };
    });
    let firstMove: Promise<Written | undefined>;
    let seen: unknown;
    try {
      firstMove = core.backends.migrate(firstRead, 'database', 'flag', undefined, Date.now());
      await holding;
      // The second GET moves it too, and answers: the reads that follow send the cookie it gives.
      const secondMove = core.backends.migrate(secondRead, 'database', 'flag', undefined, Date.now()).then(async (written) => {
        seen = written && (await core.backends.open(written.cookieValue))?.data.preferences;
        return written;
      });
      // The first move is let go once the second has answered, or has stopped to wait for it: not
      // a deadline on the machine's speed (a slower one only lets the second move answer later).
      await Promise.race([secondMove, new Promise((r) => setTimeout(r, 250))]);
      held();
      await Promise.all([firstMove, secondMove]);
    } finally {
      redis.evict = evict;
      held();
    }
    expect(seen, 'a read with the cookie the second GET answered with: counter 1 was answered 200 before it').to.deep.equal({ counter: 1 });
    const now = await core.backends.open(core.backends.cookieValue('database', created.record.id));
    expect(now?.data.preferences).to.deep.equal({ counter: 1 });
  });
});
