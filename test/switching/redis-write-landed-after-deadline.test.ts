/**
 * A write into Redis that misses Redis's deadline (a saturated host) fails over to the database,
 * answered 200 with a cookie naming the database — and may have landed in Redis all the same: the
 * command had been sent. Nothing evicted that Redis copy (or, for a save that did not land, the
 * copy the request had read). A request sent with a cookie naming Redis — a tab that sent it before
 * this answer, or whose own request that copy took meanwhile — was served it and saved on it,
 * answered 200, while the session went on in the database: whichever cookie the browser kept, one
 * side's changes were gone. (Traced in bench:flips with Redis's deadline cut to 25 ms.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore } from './redis-move-core.js';

describe('a write into Redis that fails over past its deadline and lands all the same', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('redis-landed-late');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** What SessionWriter does with a changed session and the flag saying `target`. */
  function written(changed: SessionRecord, concurrency: ReturnType<typeof patched>['concurrency'], target: 'database' | 'redis') {
    return changed.backend === target ? core.backends.update(changed, 'save', concurrency) : core.backends.migrate(changed, target, 'flag', concurrency, Date.now());
  }

  /**
   * The next Redis `method` call reaches Redis (and, if `lands`, is carried out there), and its
   * answer comes only once Redis's deadline has made the request give up on it: not a wall-clock
   * pause, which the guard's grace for a busy process could outlast.
   */
  function answeredAfterDeadline(method: 'save' | 'moveIn', lands: boolean) {
    const guard = (core.backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;
    const inner = guard.inner as SessionStore & Record<typeof method, (...args: unknown[]) => Promise<string | undefined>>;
    const guarded = guard as unknown as Record<typeof method, (...args: unknown[]) => Promise<string | undefined>>;
    const [original, outer] = [inner[method], guarded[method]];
    let gaveUp: () => void = () => {};
    const givenUp = new Promise<void>((resolve) => (gaveUp = resolve));
    inner[method] = async (...args: unknown[]) => {
      inner[method] = original;
      const token = lands ? await original.apply(inner, args) : undefined;
      await givenUp;
      return token;
    };
    guarded[method] = (...args: unknown[]) => {
      guarded[method] = outer;
      const answer = outer.apply(guard, args);
      answer.catch(() => gaveUp());
      return answer;
    };
  }

  /**
   * After `failedOver` ({w0, a} answered 200): a tab's request sent with `redisCookie`, naming
   * Redis, before that answer came, reads the session and changes it (t), the flag saying Redis.
   * Whichever cookie the browser keeps, every change answered 200 is in the session.
   */
  async function tabSavesWithRedisCookie(redisCookie: string, failedOver: [string, Written]) {
    const tab = (await core.backends.open(redisCookie))!;
    expect(tab.data.preferences, "the tab's read").to.deep.equal({ w0: 0, a: 1 });
    const two = patched(tab, { t: 2 });
    const third = (await written(two.changed, two.concurrency, 'redis'))!;
    expect(third.record.data.preferences).to.deep.equal({ w0: 0, a: 1, t: 2 });
    const cookies = [failedOver, ["the tab's request", third], ['a request sent with the cookie naming Redis', { cookieValue: redisCookie }]] as const;
    for (const [which, { cookieValue }] of cookies) {
      const now = (await core.backends.open(cookieValue))!;
      expect(now.data.preferences, `read with the cookie of ${which}`).to.deep.equal({ w0: 0, a: 1, t: 2 });
    }
  }

  for (const lands of [true, false]) {
    it(`keeps a tab's change made on the Redis copy after a save failed over (the save ${lands ? 'landed' : 'did not land'} in Redis)`, async () => {
      const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'redis'), 'redis');
      const read = (await core.backends.open(created.cookieValue))!;
      const one = patched(read, { a: 1 });
      answeredAfterDeadline('save', lands);
      const saved = (await core.backends.update(one.changed, 'save', one.concurrency)) as Written;
      expect(saved.fellBackFrom, 'failed over').to.equal('redis');
      expect(saved.record.data.preferences).to.deep.equal({ w0: 0, a: 1 });
      await tabSavesWithRedisCookie(created.cookieValue, ['the failed-over save', saved]);
    });
  }

  it("keeps a tab's change made on the Redis copy a move into Redis wrote before it failed over", async () => {
    // The session was in Redis once (the browser may still send that cookie), then moved out.
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'redis'), 'redis');
    const out = (await core.backends.migrate((await core.backends.open(created.cookieValue))!, 'database', 'flag'))!;
    expect(out.record.backend).to.equal('database');
    // Told Redis again: the move's Redis write lands, and is answered past the deadline.
    const read = (await core.backends.open(out.cookieValue))!;
    const one = patched(read, { a: 1 });
    answeredAfterDeadline('moveIn', true);
    const moved = (await core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now()))!;
    expect(moved.fellBackFrom, 'failed over').to.equal('redis');
    expect(moved.record.backend).to.equal('database');
    await tabSavesWithRedisCookie(created.cookieValue, ['the failed-over move', moved]);
  });

  it('leaves nothing to take after a save an open breaker failed over: Redis was never sent it', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'redis'), 'redis');
    const read = (await core.backends.open(created.cookieValue))!;
    const guard = (core.backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;
    const isolated = (guard as unknown as { breaker: { isolate(): { dispose(): void } } }).breaker.isolate();
    try {
      const one = patched(read, { a: 1 });
      const saved = (await core.backends.update(one.changed, 'save', one.concurrency)) as Written;
      expect(saved.fallbackReason).to.equal('circuit_open');
      // An outage fails every session over this way: none is to be taken at its next open (each
      // such open would try the take again, through the open breaker).
      const untaken = (core.backends as unknown as { untaken: Map<string, unknown> }).untaken;
      expect(untaken.has(read.idHash)).to.equal(false);
    } finally {
      isolated.dispose();
    }
  });
});
