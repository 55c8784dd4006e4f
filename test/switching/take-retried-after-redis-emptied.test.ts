/**
 * A move out of Redis takes what a tab saved there after the move read the session
 * (`takeLeftBehind`); Redis does not answer the take's eviction (a stall, a restart), and the
 * take is tried again at the session's next open (`untaken`). By then Redis has come back empty:
 * the copy the take holds is gone, not removed by it, and the take read that as another request
 * having taken it first — only this request's own changes put back, the tab's change, answered
 * 200, gone for good (its copy written behind was refused: the entry had moved on). Found by
 * helper 14's flip harness (checkpoints, Redis restarted empty) in a store-call trace.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore, unansweredRedisEviction } from './redis-move-core.js';

describe('a take of a copy left in Redis, tried again once Redis came back empty', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('take-retried-emptied', { MIRROR_FLUSH_MS: '10000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  it("keeps the tab's change", async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0 } } }, 'redis'), 'redis');
    const m = (await core.backends.open(created.cookieValue))!;
    const t = patched((await core.backends.open(created.cookieValue))!, { t: 1 });
    // T saves in Redis after M read the session: answered 200.
    expect((await core.backends.update(t.changed, 'save', t.concurrency))?.record.backend).to.equal('redis');
    // M moves the session to the database; Redis does not answer the take's eviction of T's copy.
    const unanswered = unansweredRedisEviction(core, 2);
    let moved;
    try {
      moved = (await core.backends.migrate(m, 'database', 'flag'))!;
    } finally {
      unanswered.restore();
    }
    expect(moved.record.backend).to.equal('database');
    // Redis comes back empty; the session's next open tries the take again.
    const keys = await core.redis!.keys('take-retried-emptied-*:s:*');
    if (keys.length) await core.redis!.del(...keys);
    for (const [who, cookieValue] of [['M', moved.cookieValue], ['T', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ a: 0, t: 1 });
    }
  });
});
