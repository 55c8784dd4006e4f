/**
 * A move out of Redis takes what a tab saved there after the move read the session
 * (`takeLeftBehind`); the take's eviction of that copy misses Redis's deadline (Redis stalled)
 * and lands all the same, and the take is tried again at the session's next open (`untaken`).
 * The retry finds the copy gone, not removed by its own eviction, and took it for taken by
 * another request unless the directory entry was as it had just read it — but a save of the
 * session where it now is (another tab's, in the database) changes the entry too. Only this
 * request's own changes were put back: the tab's change in Redis, answered 200, was gone for good.
 * Found by helper 16's flip harness (Redis stalled, STORE_TIMEOUT_MS=25, a loaded machine) in a
 * store-call trace.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore, unansweredRedisEviction } from './redis-move-core.js';

describe('a take of a copy left in Redis, tried again after its eviction landed past the deadline', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('take-retried-landed', { MIRROR_FLUSH_MS: '10000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  it("keeps the tab's change while the session takes other saves", async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0 } } }, 'redis'), 'redis');
    const m = (await core.backends.open(created.cookieValue))!;
    const t = patched((await core.backends.open(created.cookieValue))!, { t: 1 });
    // T saves in Redis after M read the session: answered 200.
    expect((await core.backends.update(t.changed, 'save', t.concurrency))?.record.backend).to.equal('redis');
    // M moves the session to the database; the take's eviction of T's copy removes it, and is
    // answered past Redis's deadline. When the take is tried again, a tab saves the session in
    // the database just before the retry's eviction.
    const unanswered = unansweredRedisEviction(core, 2, {
      landed: true,
      before: async (n) => {
        if (n !== 3) return;
        const row = (await core.backends.directory.load(created.record.id))!;
        const d = patched(row, { d: 1 });
        expect(await core.backends.stores.database.save(d.changed, row.version)).to.be.a('string');
      },
    });
    let moved;
    try {
      moved = (await core.backends.migrate(m, 'database', 'flag'))!;
      expect(moved.record.backend).to.equal('database');
      expect(unanswered.evictions()).to.equal(2);
      // The session's next open tries the take again.
      await core.backends.open(moved.cookieValue);
      expect(unanswered.evictions()).to.equal(3);
    } finally {
      unanswered.restore();
    }
    for (const [who, cookieValue] of [['M', moved.cookieValue], ['T', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ a: 0, t: 1, d: 1 });
    }
  });
});
