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
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
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
});
