/**
 * A save failing over from Redis to the database copy (`saveOnFallback`) read that copy without
 * first writing this instance's copy of a save another tab had just made in Redis (written behind,
 * MIRROR_FLUSH_MS): it merged onto, or replaced, a copy one change old, and the copy written behind,
 * landing after it, was refused (the row had moved on, now the database's). That change, answered
 * 200, was then only in Redis, for a take at a later open — lost for good when Redis came back
 * empty, and missing meanwhile, for as long as Redis's breaker stayed open. A read of the copy in
 * place of Redis writes this instance's copy first (SessionBackends `opened`, MirroredStore.load):
 * README's guarantee for a change made within MIRROR_FLUSH_MS of Redis failing. Found by helper
 * 13's flip harness (Redis stalled in bursts, STORE_TIMEOUT_MS 25): a store trace showed the
 * fallback's write of the row just before the batch holding the other tab's change.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMissesNextSave, redisMoveCore } from './redis-move-core.js';

describe('a save failing over from Redis just after another tab saved there', function () {
  this.timeout(60_000);
  // The other tab's copy, written behind, is still waiting when the save fails over (as within MIRROR_FLUSH_MS).
  const opened = redisMoveCore('fallback-unwritten', { MIRROR_FLUSH_MS: '10000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  it('keeps that tab’s change, also when Redis then comes back empty', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0 } } }, 'redis'), 'redis');
    // Two tabs read the session in Redis.
    const a = patched((await core.backends.open(created.cookieValue))!, { a: 1 });
    const b = patched((await core.backends.open(created.cookieValue))!, { b: 1 });
    // B saves in Redis: answered 200.
    expect((await core.backends.update(b.changed, 'save', b.concurrency))?.record.backend).to.equal('redis');
    // Redis stops answering A's save (its deadline): it fails over to the database copy.
    const missed = redisMissesNextSave(core);
    let aSaved;
    try {
      aSaved = (await core.backends.update(a.changed, 'save', a.concurrency))!;
    } finally {
      missed.restore();
    }
    expect(aSaved.record.backend).to.equal('database');
    // Redis comes back empty: B's change is no longer there.
    const keys = await core.redis!.keys('fallback-unwritten-*:s:*');
    if (keys.length) await core.redis!.del(...keys);
    for (const [who, cookieValue] of [['A', aSaved.cookieValue], ['B', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ a: 1, b: 1 });
    }
  });
});
