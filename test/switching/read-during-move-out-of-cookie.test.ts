/**
 * A read with a seal made after a move out of the cookie read the session (a save told cookie a
 * moment longer, answered 200), while that move carries the seal over onto the moved copy
 * (SessionBackends.whereMovedOut waits for it). Served the moved copy meanwhile, the read lacked
 * the seal's change: the entry is stepped past the seal (MOVE_OUT_STEP).
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';
import { answeredOrWaiting } from './redis-move-core.js';

const TO_REDIS = { REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `cookie-move-read-${randomBytes(4).toString('hex')}:` };

describe('a read with a seal made after a move out of the cookie read the session', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore(TO_REDIS);
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('shows the seal change once the move has carried it over', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0 } } }, 'cookie'), 'cookie');
    const a = patched((await core.backends.open(created.cookieValue))!, { a: 1 });
    const cookie = core.backends.stores.cookie;
    const redis = core.backends.stores.redis;
    const evict = cookie.evict.bind(cookie);
    const save = redis.save.bind(redis);
    let b: Awaited<ReturnType<typeof core.backends.update>>;
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    let carrying: () => void = () => {};
    const atCarry = new Promise<void>((resolve) => (carrying = resolve));
    // B's PATCH (b: 1), told cookie, seals N + 1 after A's move read N, before it evicts.
    cookie.evict = async (r) => {
      cookie.evict = evict;
      const bRead = patched((await core.backends.open(created.cookieValue))!, { b: 1 });
      b = await core.backends.update(bRead.changed, 'save', bRead.concurrency);
      return evict(r);
    };
    // The carry-over of B's seal onto the moved copy, held in Redis.
    redis.save = async (r, expected) => {
      redis.save = save;
      carrying();
      await released;
      return save(r, expected);
    };
    try {
      const moving = core.backends.migrate(a.changed, 'redis', 'flag', a.concurrency);
      await atCarry;
      expect(b!.record.backend).to.equal('cookie');
      const reading = core.backends.open(b!.cookieValue);
      await answeredOrWaiting(reading);
      release();
      const read = (await reading)!;
      await moving;
      expect(read.data.preferences, 'B was answered 200 before the read').to.deep.equal({ a: 1, b: 1 });
    } finally {
      cookie.evict = evict;
      redis.save = save;
      release();
    }
  });
});
