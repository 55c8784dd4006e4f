/**
 * Two requests of one session, each with a cookie of its own from the shared jar, move it out of
 * the cookie into Redis: the first read seal N; the second read seal N + 1, sealed by a third
 * request (told cookie a moment longer) after the first had read N. With a move out of the cookie
 * writing the next version, the first move wrote N + 1 too: the directory and Redis, which refuse
 * only a mover that read an older version than they hold, let the second move write its N + 1
 * over the first's, and the first request's change, answered 200, was gone until its writer
 * changed that preference again. (Found with five writers and a reader sharing a cookie jar while
 * the flag flipped every 100–150 ms: 24 of the 32 changes such reads missed in a 60 s run.)
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

const TO_REDIS = { REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `moves-out-of-cookie-${randomBytes(4).toString('hex')}:` };

/** Holds the cookie store's first eviction (a move out of it) until released. */
function holdCookieEviction(core: Core) {
  const cookie = core.backends.stores.cookie;
  const evict = cookie.evict.bind(cookie);
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  let reached: () => void = () => {};
  const atEviction = new Promise<void>((resolve) => (reached = resolve));
  let calls = 0;
  cookie.evict = async (r) => {
    if (++calls === 1) {
      reached();
      await released;
    }
    return evict(r);
  };
  return { atEviction, release, restore: () => ((cookie.evict = evict), release()) };
}

describe('two moves out of the cookie of seals a version apart', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore(TO_REDIS);
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('keeps the change of the move that read the older seal', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0 } } }, 'cookie'), 'cookie');
    // Writer A's PATCH (a: 1) reads seal N; writer B's (b: 1), told cookie, seals N + 1: answered 200.
    const a = patched((await core.backends.open(created.cookieValue))!, { a: 1 });
    const b = patched((await core.backends.open(created.cookieValue))!, { b: 1 });
    const sealedB = (await core.backends.update(b.changed, 'save', b.concurrency))!;
    expect(sealedB.record.backend).to.equal('cookie');
    // A, told Redis, moves the session there; held once written there, before it leaves the cookie.
    const hold = holdCookieEviction(core);
    try {
      const movingA = core.backends.migrate(a.changed, 'redis', 'flag', a.concurrency);
      await hold.atEviction;
      // The reader's GET, with B's cookie (the jar's last), moves seal N + 1 into Redis too.
      const read = (await core.backends.open(sealedB.cookieValue))!;
      expect(read.version).to.equal(sealedB.record.version);
      await core.backends.migrate(read, 'redis', 'flag');
      hold.release();
      const movedA = await movingA;
      expect(movedA?.record.backend, 'A answered 200 in Redis').to.equal('redis');
    } finally {
      hold.restore();
    }
    const now = await core.backends.open(core.backends.cookieValue('redis', created.record.id));
    expect(now?.data.preferences, 'both changes answered 200').to.deep.equal({ a: 1, b: 1 });
  });
});
