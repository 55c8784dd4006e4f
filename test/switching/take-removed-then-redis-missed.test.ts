/**
 * A take of a copy left in Redis that removed it, and then missed Redis's deadline on its read of
 * what Redis holds now, reads again (`continue`): the second eviction finds nothing (it removed
 * the copy itself), and the copy is not there. That is the take's own removal, not another
 * request's: the saves the copy held (answered 200) are carried over onto the moved copy.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a move out of Redis whose take removed the copy, then missed the read after it', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('take-removed-missed');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('carries the removed copy over all the same', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    const redis = core.backends.stores.redis;
    const { evict, loadHeld } = redis;
    let evictions = 0;
    redis.evict = async (r) => {
      const removed = await evict.call(redis, r);
      // The take's eviction (the move's own is the first) removed counter 1; Redis then misses
      // its deadline for the take's read of what it holds now.
      if (++evictions === 2) {
        expect(removed, 'the take removed the copy').to.equal(true);
        redis.loadHeld = async () => {
          redis.loadHeld = loadHeld;
          throw new BackendUnavailableError('redis', 'timeout');
        };
      }
      return removed;
    };
    try {
      await core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
    } finally {
      redis.evict = evict;
      redis.loadHeld = loadHeld;
    }
    const now = await core.backends.open(core.backends.cookieValue('database', id));
    expect(now?.data.preferences, 'counter 1 was answered 200').to.deep.equal({ counter: 1 });
  });
});
