/**
 * A read with a seal made after a move out of the cookie read the session, while that move
 * carries the seal over (SessionBackends.whereMovedOut waits for it), once a later move out of
 * the cookie has started: a request that read that seal before the move marked it moved out.
 * Only the latest move of a session was remembered; the later one, having read the seal itself,
 * carries nothing of it over, and the read, waiting for none, was served the moved copy without
 * the seal's change, answered 200 (bench:flips: a reader tab's stale reads with a `c.` cookie).
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';
import { answeredOrWaiting } from './redis-move-core.js';

const preferencesOf = (r: SessionRecord) => r.data.preferences as Record<string, unknown>;

describe('a read with a seal made after a move out of the cookie read the session, once a later move started', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('waits for the carry-over of that seal all the same', async () => {
    const backends = core.backends;
    const created = await backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0, c: 0 } } }, 'cookie'), 'cookie');
    const a = patched((await backends.open(created.cookieValue))!, { a: 1 });
    const cookie = backends.stores.cookie;
    const database = backends.stores.database;
    const evict = cookie.evict.bind(cookie);
    const save = database.save.bind(database);
    let b: Awaited<ReturnType<typeof backends.update>>;
    let cMoving: ReturnType<typeof backends.migrate> | undefined;
    // Before A's move evicts what it read: B's PATCH, told cookie, seals N + 1 (answered 200), and
    // C's PATCH reads that seal and, told database, starts its own move out of the cookie.
    cookie.evict = async (r) => {
      cookie.evict = evict;
      const bRead = patched((await backends.open(created.cookieValue))!, { b: 1 });
      b = await backends.update(bRead.changed, 'save', bRead.concurrency);
      const c = patched((await backends.open(b!.cookieValue))!, { c: 1 });
      cMoving = backends.migrate(c.changed, 'database', 'flag', c.concurrency);
      return evict(r);
    };
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    let carrying: () => void = () => {};
    const atCarry = new Promise<void>((resolve) => (carrying = resolve));
    // A's carry-over of B's seal onto the moved copy (the one save holding B's change), held.
    database.save = async (r, expected) => {
      if (preferencesOf(r).b === 1) {
        database.save = save;
        carrying();
        await released;
      }
      return save(r, expected);
    };
    try {
      const moving = backends.migrate(a.changed, 'database', 'flag', a.concurrency);
      await atCarry;
      await cMoving;
      expect(b!.record.backend).to.equal('cookie');
      const reading = backends.open(b!.cookieValue);
      await answeredOrWaiting(reading);
      release();
      const read = (await reading)!;
      await moving;
      expect(preferencesOf(read), 'B was answered 200 before the read').to.include({ a: 1, b: 1 });
    } finally {
      cookie.evict = evict;
      database.save = save;
      release();
    }
  });
});
