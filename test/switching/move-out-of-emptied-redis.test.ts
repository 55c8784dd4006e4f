/**
 * A move out of Redis by a request that read the session before a save landed there, while Redis
 * lost that save (restarted empty, the key evicted) before the move's take asked it. The save's
 * only other copy is this instance's database copy, written behind (MIRROR_FLUSH_MS): the move
 * wrote the directory entry first, over the row the copy was to update, and the copy, landing
 * after it, is refused (the row has moved on); the take then finds Redis without a copy, and takes
 * nothing. The change, answered 200 a moment before Redis failed, was gone for good — what README
 * says the write-behind copy never loses on the instance that made it. (Helper 13's flip harness,
 * Redis killed and restarted empty every 0.5–1.5 s: a key written once, answered 200 8 ms before a
 * kill, was lost for good while tabs that had read the session before it moved it out of Redis.)
 * When Redis does not answer at the move, the take is put off to a later open (`untaken`) with the
 * copy the move kept; by then a tab may have changed the session where it went, and the copy's
 * changes go back only where nothing changed since (`carried`), so the tab's later value stays.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a move out of Redis after Redis lost a save (restarted empty)', function () {
  this.timeout(60_000);
  // The copies written behind wait (for 10 s, the longest MIRROR_FLUSH_MS): the move comes within MIRROR_FLUSH_MS of the save, every time.
  const opened = redisMoveCore('move-out-emptied-redis', { MIRROR_FLUSH_MS: '10000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  for (const target of ['cookie', 'database'] as const) {
    it(`into ${target} keeps the save Redis lost, answered 200 before it`, async () => {
      const { cookieValue, read } = await readThenSavedInRedis(core);
      // Redis comes back empty: the session's key, counter 1 in it, is gone.
      const keys = await core.redis!.keys('move-out-emptied-redis-*:s:*');
      expect(keys, 'the session in Redis').to.have.length.greaterThan(0);
      await core.redis!.del(...keys);
      // The GET that read counter 0 moves the session where the flag now says.
      const moved = (await core.backends.migrate(read, target, 'flag'))!;
      expect(moved.record.backend).to.equal(target);
      const after = await core.backends.open(moved.cookieValue);
      expect(after?.data.preferences, 'read with the moved session\'s cookie').to.deep.equal({ counter: 1 });
      const tab = await core.backends.open(cookieValue);
      expect(tab?.data.preferences, 'read with the cookie naming Redis').to.deep.equal({ counter: 1 });
    });
  }

  /** Redis, or the Cluster master holding the session, not answering of late (its breaker open) until `restore`. */
  function redisSilent() {
    const redis = core.backends.stores.redis as unknown as { availableFor(idHash: string): boolean };
    const availableFor = redis.availableFor;
    redis.availableFor = () => false;
    return { restore: () => (redis.availableFor = availableFor) };
  }

  for (const target of ['cookie', 'database'] as const) {
    it(`into ${target}, its take put off while Redis does not answer and made at a later open, after a tab changed the session: the save comes back, the tab's change stays`, async () => {
      const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
      const read = (await core.backends.open(created.cookieValue))!;
      const one = patched(read, { counter: 1, seen: 1 });
      expect((await core.backends.update(one.changed, 'save', one.concurrency))?.record.backend).to.equal('redis');
      await core.redis!.del(...(await core.redis!.keys('move-out-emptied-redis-*:s:*')));
      const silent = redisSilent();
      let movedCookie: string;
      try {
        const moved = (await core.backends.migrate(read, target, 'flag'))!;
        expect(moved.record.backend).to.equal(target);
        movedCookie = moved.cookieValue;
        // A tab, answered the move's cookie, sets the counter again while Redis is still silent:
        // its open retries the take, which is put off once more.
        const tab = (await core.backends.open(movedCookie))!;
        const two = patched(tab, { counter: 2 });
        const saved = (await core.backends.update(two.changed, 'save', two.concurrency))!;
        expect(saved.record.backend).to.equal(target);
        movedCookie = saved.cookieValue;
      } finally {
        silent.restore();
      }
      // Redis answers again (empty): the next open makes the take, with the copy the move kept.
      const after = await core.backends.open(movedCookie);
      expect(after?.data.preferences, "read with the tab's cookie").to.deep.equal({ counter: 2, seen: 1 });
      const again = await core.backends.open(created.cookieValue);
      expect(again?.data.preferences, 'read with the cookie naming Redis').to.deep.equal({ counter: 2, seen: 1 });
    });
  }
});
