/**
 * A move out of Redis into the cookie, refused by the cookie store's own newer seal (a tab's save
 * that had followed the session into the cookie: CookieStore.moveIn), writes the session there as
 * that seal holds it, this request's changes on top (SessionBackends `moveTried`). A save another
 * tab had made in Redis since the move read it was then taken (`takeLeftBehind`) and carried over
 * against what the move wrote — the seal's data, which the Redis copy had never had: the seal's
 * changes read as changes that copy had undone, and the carry-over wrote them away (a witness key
 * deleted, a writer's value put back). Found by helper 14's flip harness (checkpoints, Redis
 * restarted empty, STORE_TIMEOUT_MS=25) in a store-call trace. The copy left is carried over
 * against what the move read there.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { CookieStore } from '../../src/sessions/cookie-store.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import { movedVersion } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore } from './redis-move-core.js';

describe('a save left in Redis, taken after a move into the cookie that a newer seal refused', function () {
  this.timeout(60_000);
  // The tab's copy in Redis, written behind, is still waiting when the move writes the directory entry.
  const opened = redisMoveCore('take-refused-cookie', { MIRROR_FLUSH_MS: '10000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  it("keeps the seal's change and the tab's", async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0 } } }, 'redis'), 'redis');
    // M reads the session in Redis (a read: it changes nothing); so does a tab T.
    const m = (await core.backends.open(created.cookieValue))!;
    const t = patched((await core.backends.open(created.cookieValue))!, { t: 1 });
    // T saves in Redis, answered 200.
    expect((await core.backends.update(t.changed, 'save', t.concurrency))?.record.backend).to.equal('redis');
    // This instance sealed the session anew in the cookie, past where M's move goes: a tab's save
    // that followed the session there (answered 200, its change s: 1).
    const cookies = ((core.backends.stores.cookie as unknown as MirroredStore).primary as GuardedStore).inner as CookieStore;
    const seal = { ...m, backend: 'cookie' as const, version: movedVersion('redis', m.version) + 2, data: { ...m.data, preferences: { a: 0, s: 1 } } };
    await cookies.save(seal);
    // The flag says cookie: M moves the session there, is refused by that seal, and writes it as the seal holds it.
    const moved = (await core.backends.migrate(m, 'cookie', 'flag'))!;
    expect(moved.record.backend).to.equal('cookie');
    const now = await core.backends.open(moved.cookieValue);
    expect(now?.data.preferences, 'read with the cookie M was answered').to.deep.equal({ a: 0, s: 1, t: 1 });
  });
});
