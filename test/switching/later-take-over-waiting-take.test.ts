/**
 * Two saves failing over from Redis one after the other each schedule a take of the Redis copy
 * for the session's next open (`untaken`): the first (it read the session late) against what it
 * wrote, the second (it read the session long before, and its save, slow, failed over after)
 * against the data it had sent to Redis. The second replaced the first. Meanwhile a tab had
 * saved in Redis on the copy the first read, answered 200, and the take that ran carried that
 * save over against the second's data, older than the copy it found: the key the tab changed
 * held another value there than in the moved copy (a change made between the two), read as
 * changed since, and was left as the moved copy had it — the tab's change gone for good. Found by
 * helper 16's flip harness (Redis restarted empty, STORE_TIMEOUT_MS=25, a loaded machine) in a
 * store-call trace.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore, unansweredRedisEviction } from './redis-move-core.js';

describe('two takes of a Redis copy waiting for the session’s next open', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('later-take', { MIRROR_FLUSH_MS: '10000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  it("keeps the change a tab saved in Redis after the first read it", async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 16 } } }, 'redis'), 'redis');
    // C reads the session; its save will be slow, and fail over last.
    const c = patched((await core.backends.open(created.cookieValue))!, { w3: 19 });
    // A tab saves w0: 18 in Redis; its copy reaches the database.
    const t = patched((await core.backends.open(created.cookieValue))!, { w0: 18 });
    expect((await core.backends.update(t.changed, 'save', t.concurrency))?.record.backend).to.equal('redis');
    await core.backends.stores.redis.flush!();
    // A reads the session after that save.
    const a = patched((await core.backends.open(created.cookieValue))!, { w1: 23 });
    // Another tab saves w0: 19 on that copy in Redis, answered 200; its copy is not written yet
    // (another instance's, or one still waiting in this instance's batch).
    const guarded = (core.backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;
    const latest = (await guarded.load(created.record.id))!;
    const u = patched(latest, { w0: 19 });
    expect(await guarded.save(u.changed, u.concurrency.readVersion)).to.be.a('string');
    // Redis misses A's deadline, then C's: each save fails over to the database.
    const redisSave = guarded.save.bind(guarded);
    guarded.save = async () => {
      throw new BackendUnavailableError('redis', 'timeout');
    };
    let aSaved, cSaved;
    try {
      aSaved = (await core.backends.update(a.changed, 'save', a.concurrency))!;
      cSaved = (await core.backends.update(c.changed, 'save', c.concurrency))!;
    } finally {
      guarded.save = redisSave;
    }
    expect(aSaved.record.backend, 'A answered from the database').to.equal('database');
    expect(cSaved.record.backend, 'C answered from the database').to.equal('database');
    // The session's next open takes the Redis copy.
    for (const [who, cookieValue] of [['C', cSaved.cookieValue], ['A', aSaved.cookieValue], ['the tab', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ w0: 19, w1: 23, w3: 19 });
    }
  });

  it("keeps the change a move out of Redis left there, when a save failing over schedules its take after the move's", async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0 } } }, 'redis'), 'redis');
    const m = (await core.backends.open(created.cookieValue))!;
    const t = patched((await core.backends.open(created.cookieValue))!, { t: 1 });
    // T saves in Redis after M read the session: answered 200.
    expect((await core.backends.update(t.changed, 'save', t.concurrency))?.record.backend).to.equal('redis');
    const f = patched((await core.backends.open(created.cookieValue))!, { f: 1 });
    // M moves the session to the database; Redis does not answer the take's eviction of T's copy.
    const unanswered = unansweredRedisEviction(core, 2);
    let moved;
    try {
      moved = (await core.backends.migrate(m, 'database', 'flag'))!;
    } finally {
      unanswered.restore();
    }
    expect(moved.record.backend).to.equal('database');
    // F, which read T's copy, misses Redis's deadline: its save fails over onto the moved copy.
    const guarded = (core.backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;
    const redisSave = guarded.save.bind(guarded);
    guarded.save = async () => {
      guarded.save = redisSave;
      throw new BackendUnavailableError('redis', 'timeout');
    };
    const fSaved = (await core.backends.update(f.changed, 'save', f.concurrency))!;
    expect(fSaved.record.backend, 'F answered from the database').to.equal('database');
    // Redis comes back empty; the session's next open makes the takes.
    const keys = await core.redis!.keys('later-take-*:s:*');
    if (keys.length) await core.redis!.del(...keys);
    for (const [who, cookieValue] of [['M', moved.cookieValue], ['F', fSaved.cookieValue], ['T', created.cookieValue]] as const) {
      const now = await core.backends.open(cookieValue);
      expect(now?.data.preferences, `read with the cookie ${who} was answered`).to.deep.equal({ a: 0, t: 1, f: 1 });
    }
  });
});
