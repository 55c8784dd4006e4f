/**
 * A save failing over from Redis (`saveOnFallback`) whose database write is refused merges onto
 * the directory entry as it then is — the copy of a tab's save made in Redis since this request
 * read the session — and schedules the take of the Redis copy (`takeLandedLater`), carried over
 * against what this request sent Redis (`carriedFrom`). Redis went on serving the other tabs: one
 * saved there again, answered 200. The take carried that copy over against the request's own
 * older read, and a key changed between that read and the entry it merged onto read as changed
 * since by the database side: the Redis side's later value of it, answered 200, was dropped.
 * (Traced in bench:flips among all three backends at load average 9–10: writers' values lost for
 * good at a checkpoint.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMissesNextSave, redisMoveCore, stallNextDirectoryCall } from './redis-move-core.js';

describe('the take after a save failing over from Redis that merged onto a newer entry', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('fallback-take-merge');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('keeps a change saved in Redis after the fallback', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0 } } }, 'redis'), 'redis');
    const a = patched((await core.backends.open(created.cookieValue))!, { a: 1 });
    const b = patched((await core.backends.open(created.cookieValue))!, { b: 1 });
    // Redis misses A's deadline: A's save fails over to the database; its write there is slow.
    redisMissesNextSave(core);
    // The database holds A's save until released (a slow statement): what the test does meanwhile lands first.
    const held = stallNextDirectoryCall(core, 'save');
    const aSaving = core.backends.update(a.changed, 'save', a.concurrency);
    await held.reached;
    // Meanwhile B saves b = 1 in Redis (answered 200), its copy reaches the entry, and C reads the session there.
    expect((await core.backends.update(b.changed, 'save', b.concurrency))?.record.backend).to.equal('redis');
    await core.backends.stores.redis.flush!();
    const c = patched((await core.backends.open(created.cookieValue))!, { b: 2 });
    held.release();
    const aSaved = (await aSaving)!;
    expect(aSaved.record.backend, 'A answered from the database').to.equal('database');
    // C, told Redis, saves b = 2 there: answered 200.
    expect((await core.backends.update(c.changed, 'save', c.concurrency))?.record.backend, 'C saved in Redis').to.equal('redis');
    // The next open takes the Redis copy.
    for (const [who, cookieValue] of [['A', aSaved.cookieValue], ['B', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ a: 1, b: 2 });
    }
  });
});
