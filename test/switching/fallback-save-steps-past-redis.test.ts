/**
 * A save failing over from Redis (`saveOnFallback`) wrote the session's directory entry, which
 * named Redis, as the database's at the next version — while Redis went on serving the session
 * to the other tabs (only this save had missed Redis's deadline), and its versions went on from
 * the same number. A move out of Redis of a copy another tab had saved there since (one version
 * on) then passed the entry's check (the entry no newer than what the move read) and wrote over
 * the fallback's change, answered 200; the take of the Redis copy scheduled for the fallback
 * (`takeLandedLater`) ran only after, on a session whose entry no longer held that change. A move
 * out of Redis writes the entry a step past anything the Redis copy can reach (MOVE_OUT_STEP):
 * so does a save that takes the entry out of Redis. Found by helper 14's flip harness
 * (checkpoints, Redis restarted empty, STORE_TIMEOUT_MS=25) in a store-call trace.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMissesNextSave, redisMoveCore, stallNextDirectoryCall } from './redis-move-core.js';

describe('a save failing over from Redis while another tab saves there, then a move out of Redis', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('fallback-steps');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('keeps the fallback’s change and the other tab’s', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0 } } }, 'redis'), 'redis');
    const a = patched((await core.backends.open(created.cookieValue))!, { a: 1 });
    const b = patched((await core.backends.open(created.cookieValue))!, { b: 1 });
    // Redis misses A's deadline: A's save fails over to the database; its write there is slow.
    redisMissesNextSave(core);
    // The database holds A's save until released (a slow statement): what the test does meanwhile lands first.
    const held = stallNextDirectoryCall(core, 'save');
    const aSaving = core.backends.update(a.changed, 'save', a.concurrency);
    await held.reached;
    // Meanwhile B saves in Redis (answered 200), and C reads the session there.
    expect((await core.backends.update(b.changed, 'save', b.concurrency))?.record.backend).to.equal('redis');
    const c = (await core.backends.open(created.cookieValue))!;
    expect(c.backend).to.equal('redis');
    held.release();
    const aSaved = (await aSaving)!;
    expect(aSaved.record.backend, 'A answered from the database').to.equal('database');
    // The flag says database: C moves the session out of Redis.
    const moved = (await core.backends.migrate(c, 'database', 'flag'))!;
    for (const [who, cookieValue] of [['A', aSaved.cookieValue], ['C', moved.cookieValue], ['B', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ a: 1, b: 1 });
    }
  });
});
