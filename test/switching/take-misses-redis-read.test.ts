/**
 * A move out of Redis takes what saves left in Redis after it read the session
 * (SessionBackends.takeLeftBehind): it removes that copy at the version it read, and, where a save
 * got in first, reads the copy again and removes that. When Redis did not answer that read (its
 * deadline missed on a loaded machine), the take took the copy for gone — removed by another
 * request — and gave up, though the copy was still there. Left in Redis, it went on taking the
 * saves of requests that had read it there (answered 200), while every read followed the
 * directory to the moved copy: a later move left them behind for good. (Found by bench:flips,
 * flips every 50–80 ms: the last changes of two writers of one session.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { patched } from './lagging-cookie-core.js';
import { readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a move out of Redis whose take cannot read the copy a save left there first', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('take-misses-redis-read');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('takes it all the same, and keeps the saves it holds', async () => {
    const { id, cookieValue, read } = await readThenSavedInRedis(core);
    // Another writer's request read counter 1 in Redis, and saves counter 2 there a moment later.
    const writer = (await core.backends.open(cookieValue))!;
    expect(writer.data.preferences).to.deep.equal({ counter: 1 });
    const redis = core.backends.stores.redis;
    const { evict, loadHeld } = redis;
    let evictions = 0;
    redis.evict = async (r) => {
      // The take's eviction (the move's own is the first): the writer's save gets in first, and
      // Redis then misses its deadline for the take's read of what it holds now.
      if (++evictions === 2) {
        const two = patched(writer, { counter: 2 });
        expect((await core.backends.update(two.changed, 'save', two.concurrency))?.record.backend, 'counter 2 saved in Redis').to.equal('redis');
        redis.loadHeld = async () => {
          redis.loadHeld = loadHeld;
          throw new BackendUnavailableError('redis', 'timeout');
        };
      }
      return evict.call(redis, r);
    };
    try {
      // The GET moves the session to the database (counter 0) and finds counter 1 left in Redis.
      await core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
    } finally {
      redis.evict = evict;
      redis.loadHeld = loadHeld;
    }
    const now = await core.backends.open(core.backends.cookieValue('database', id));
    expect(now?.data.preferences, 'counter 1 and 2 were answered 200').to.deep.equal({ counter: 2 });
    // The copy is taken: a save that read it there finds it gone and follows the session.
    expect(await redis.loadHeld!(id), 'nothing left in Redis to take saves').to.equal(undefined);
  });
});
