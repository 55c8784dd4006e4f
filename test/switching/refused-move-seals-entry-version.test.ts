/**
 * Two tabs move a database session into the cookie at once. B's move writes the directory entry
 * (one version on, held by the cookie) and has not sealed yet; A's move, refused by that entry,
 * reads it and — the entry naming the cookie, where A was going — saves its change there. It
 * sealed at the entry's own version: the seal and the entry were two sessions at one version, and
 * the seal alone had A's change. A third tab's save, read from the database before the moves,
 * followed the session from the entry into the cookie at that version, passed the cookie store's
 * check (it refuses only a seal newer than what the save read), and sealed the entry's data over
 * A's change, answered 200. Found by helper 13's flip harness (flips among the three backends
 * every 100–150 ms, Redis stalled in bursts; a witness key written once, lost for good): the
 * store trace showed the refused mover's seal at the entry's version, and the follower's seal
 * over it.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { holdNextSeal, laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a move into the cookie refused by another move’s directory entry', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('keeps its change when a save follows the session from that entry into the cookie', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0, b: 0, c: 0 } } }, 'database'), 'database');
    // Three tabs read the session in the database, before the flag said cookie.
    const a = patched((await core.backends.open(created.cookieValue))!, { a: 1 });
    const b = patched((await core.backends.open(created.cookieValue))!, { b: 1 });
    const c = patched((await core.backends.open(created.cookieValue))!, { c: 1 });
    // B's move is held after its directory entry, before it seals.
    const seal = holdNextSeal(core);
    try {
      const bMove = core.backends.migrate(b.changed, 'cookie', 'flag', b.concurrency);
      await seal.reached;
      // A's move: refused by B's entry, it saves A's change in the cookie, which the entry names.
      const aMoved = (await core.backends.migrate(a.changed, 'cookie', 'flag', a.concurrency))!;
      expect(aMoved.record.data.preferences, 'A answered').to.include({ a: 1 });
      // C's save, read in the database: it follows the session from the entry into the cookie.
      const cSaved = (await core.backends.update(c.changed, 'save', c.concurrency))!;
      seal.release();
      const bMoved = (await bMove)!;
      for (const [who, written] of [['C', cSaved], ['B', bMoved]] as const) {
        const now = await core.backends.open(written.cookieValue);
        expect(now?.data.preferences, `read with the cookie ${who} answered`).to.deep.equal({ a: 1, b: 1, c: 1 });
      }
    } finally {
      seal.restore();
    }
  });
});
