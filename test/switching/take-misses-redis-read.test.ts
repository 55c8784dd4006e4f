/**
 * A move out of Redis takes what saves left in Redis after it read the session
 * (SessionBackends.takeLeftBehind): it removes that copy at the version it read, and, where a save
 * got in first, reads the copy again and removes that. When Redis did not answer that read (its
 * deadline missed on a loaded machine):
 * - the take took the copy for gone — removed by another request — and gave up, though the copy
 *   was still there. Left in Redis, it went on taking the saves of requests that had read it there
 *   (answered 200), while every read followed the directory to the moved copy: a later move left
 *   them behind for good. (Found by bench:flips, flips every 50–80 ms: the last changes of two
 *   writers of one session.) It now reads again;
 * - reading again after its own eviction had removed the copy, the take found nothing, took that
 *   for another request's removal, and never carried the copy's saves over (a reviewer, the same
 *   hour). A copy the take removed itself is carried over, read back or not;
 * - the move's own read of whether saves left a copy, or the take's eviction of it, missing the
 *   deadline, ended the take as if there were none (a traced bench:flips loss each): now tried
 *   again at the session's next open, as a take the database failed is.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { patched } from './lagging-cookie-core.js';
import { readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a move out of Redis whose take misses Redis’s deadline reading the copy left there', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('take-misses-redis-read');
  let core: Core;
  before(() => {
    core = opened();
  });

  /**
   * The session (counter 1 saved in Redis after `read`) moved to the database by a GET that read
   * counter 0; at the take's eviction (the move's own is the first), `meanwhile` runs first, and
   * Redis then misses its deadline for the take's next read of what it holds. Whether that
   * eviction removed the copy is returned.
   */
  async function moveMissingTakeRead(read: Awaited<ReturnType<typeof readThenSavedInRedis>>['read'], meanwhile: () => Promise<void> = async () => {}) {
    const redis = core.backends.stores.redis;
    const { evict, loadHeld } = redis;
    let evictions = 0;
    let removedByTake: boolean | void = undefined;
    redis.evict = async (r) => {
      if (++evictions !== 2) return evict.call(redis, r);
      await meanwhile();
      removedByTake = await evict.call(redis, r);
      redis.loadHeld = async () => {
        redis.loadHeld = loadHeld;
        throw new BackendUnavailableError('redis', 'timeout');
      };
      return removedByTake;
    };
    try {
      await core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
    } finally {
      redis.evict = evict;
      redis.loadHeld = loadHeld;
    }
    return removedByTake;
  }

  it('reads again a copy a save changed first, takes it, and keeps the saves it holds', async () => {
    const { id, cookieValue, read } = await readThenSavedInRedis(core);
    // Another writer's request read counter 1 in Redis, and saves counter 2 there a moment later.
    const writer = (await core.backends.open(cookieValue))!;
    expect(writer.data.preferences).to.deep.equal({ counter: 1 });
    const removed = await moveMissingTakeRead(read, async () => {
      const two = patched(writer, { counter: 2 });
      expect((await core.backends.update(two.changed, 'save', two.concurrency))?.record.backend, 'counter 2 saved in Redis').to.equal('redis');
    });
    expect(removed, 'the take’s first eviction missed (counter 2 got in first)').to.equal(false);
    const now = await core.backends.open(core.backends.cookieValue('database', id));
    expect(now?.data.preferences, 'counter 1 and 2 were answered 200').to.deep.equal({ counter: 2 });
    // The copy is taken: a save that read it there finds it gone and follows the session.
    expect(await core.backends.stores.redis.loadHeld!(id), 'nothing left in Redis to take saves').to.equal(undefined);
  });

  it('carries over a copy its own eviction removed, though it could not read Redis after', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    expect(await moveMissingTakeRead(read), 'the take removed the copy').to.equal(true);
    const now = await core.backends.open(core.backends.cookieValue('database', id));
    expect(now?.data.preferences, 'counter 1 was answered 200').to.deep.equal({ counter: 1 });
  });

  /** Redis misses its deadline for the next `method` call: once, then answers as before. */
  function redisMissesNext(method: 'loadHeld' | 'evict', after: () => boolean = () => true) {
    const redis = core.backends.stores.redis;
    const original = redis[method]!;
    redis[method] = (async (...args: unknown[]) => {
      if (!after()) return (original as (...a: unknown[]) => Promise<unknown>).apply(redis, args);
      redis[method] = original as never;
      throw new BackendUnavailableError('redis', 'timeout');
    }) as never;
    return { restore: () => (redis[method] = original as never) };
  }

  it('asks again at the next open when the move could not read whether saves left a copy', async () => {
    const { cookieValue, read } = await readThenSavedInRedis(core);
    const redis = core.backends.stores.redis;
    const evict = redis.evict;
    let evicted = false;
    redis.evict = async (r) => {
      evicted = true;
      return evict.call(redis, r);
    };
    // The move's own eviction (of the version it read) leaves counter 1; the read after it misses.
    const miss = redisMissesNext('loadHeld', () => evicted);
    try {
      await core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
    } finally {
      miss.restore();
      redis.evict = evict;
    }
    // The browser's next request (its cookie still names Redis: the GET's answer may not have come).
    const next = await core.backends.open(cookieValue);
    expect(next?.data.preferences, 'counter 1 was answered 200').to.deep.equal({ counter: 1 });
    expect(await redis.loadHeld!(read.id), 'nothing left in Redis to take saves').to.equal(undefined);
  });

  it('tries again at the next open when its eviction of the copy misses the deadline', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    let evictions = 0;
    const miss = redisMissesNext('evict', () => ++evictions === 2);
    try {
      await core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
    } finally {
      miss.restore();
    }
    const next = await core.backends.open(core.backends.cookieValue('database', id));
    expect(next?.data.preferences, 'counter 1 was answered 200').to.deep.equal({ counter: 1 });
    expect(await core.backends.stores.redis.loadHeld!(id), 'nothing left in Redis to take saves').to.equal(undefined);
  });
});
