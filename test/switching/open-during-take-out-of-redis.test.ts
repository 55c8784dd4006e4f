/**
 * A move out of Redis takes what saves left in Redis after it read the session: removes that
 * copy, then saves its changes on top of the moved one (SessionBackends.takeLeftBehind,
 * carryOver). Between the two, a request that opened the session — its cookie still naming Redis
 * (a miss there reads through to the moved copy), or naming the database — was served the moved
 * copy without those saves, and a change it made was saved on top of that: its answer lacked a
 * change answered 200 before it was sent, until the carry-over landed. (Found with one writer and
 * two readers sharing a cookie jar while the flag flipped every 150 ms among all three backends:
 * the writer's next answer lacked its previous change, about one a minute.)
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { patched } from './lagging-cookie-core.js';

describe('a session opened while a move out of Redis takes a copy left there', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let dir: string;
  let core: Core;
  const prefix = `open-during-take-${randomBytes(4).toString('hex')}:`;

  before(async () => {
    db = await createTestDatabase('switchboard_open_during_take');
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-open-during-take-'));
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

  for (const named of ['redis', 'database'] as const) {
    it(`is served with the taken save, its cookie naming ${named}`, async () => {
      const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
      const cookie = core.backends.cookieValue(named, created.record.id);
      // A GET reads the session in Redis (counter 0); the flag now says database.
      const read = (await core.backends.open(created.cookieValue))!;
      // The writer's PATCH, told Redis a moment before, saves counter 1 there: answered 200.
      const one = patched(read, { counter: 1 });
      expect((await core.backends.update(one.changed, 'save', one.concurrency))?.record.backend).to.equal('redis');

      // The GET moves the session to the database (counter 0), finds counter 1 left in Redis,
      // and takes it: held once the take has removed it, before it saves it on top.
      const redis = core.backends.stores.redis;
      const evict = redis.evict.bind(redis);
      let held: () => void = () => {};
      const holding = new Promise<void>((resolve) => {
        let calls = 0;
        redis.evict = async (r) => {
          const removed = await evict(r);
          if (++calls === 2) {
            resolve();
            await new Promise<void>((release) => (held = release));
          }
          return removed;
        };
      });
      let seen: SessionRecord | undefined;
      try {
        const move = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
        await holding;
        // The writer's next PATCH opens the session with the cookie it holds.
        const opened = core.backends.open(cookie).then((r) => (seen = r));
        // The take is let go once the open has answered, or has stopped to wait for it: not a
        // deadline on the machine's speed (a slower one only lets the open answer later).
        await Promise.race([opened, new Promise((r) => setTimeout(r, 250))]);
        held();
        await Promise.all([move, opened]);
      } finally {
        redis.evict = evict;
        held();
      }
      expect(seen?.data.preferences, 'counter 1 was answered 200 before this request was sent').to.deep.equal({ counter: 1 });
    });
  }

  it('is served, not held, while a take does not finish (the database stalled)', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
    const read = (await core.backends.open(created.cookieValue))!;
    const one = patched(read, { counter: 1 });
    await core.backends.update(one.changed, 'save', one.concurrency);
    // The take is held once it has removed the copy left in Redis, until the open has answered.
    const redis = core.backends.stores.redis;
    const evict = redis.evict.bind(redis);
    let held: () => void = () => {};
    const holding = new Promise<void>((resolve) => {
      let calls = 0;
      redis.evict = async (r) => {
        const removed = await evict(r);
        if (++calls === 2) {
          resolve();
          await new Promise<void>((release) => (held = release));
        }
        return removed;
      };
    });
    try {
      const move = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
      await holding;
      const opened = await core.backends.open(core.backends.cookieValue('database', created.record.id));
      expect(opened, 'served: the user stays logged in').to.not.equal(undefined);
      held();
      await move;
    } finally {
      redis.evict = evict;
      held();
    }
  });
});
