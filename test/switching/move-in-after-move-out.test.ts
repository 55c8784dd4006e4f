/**
 * A move into the cookie by a request that read a stale directory entry (a cookie naming the
 * database, whose entry lags behind the cookie's seals: copies are written behind) must not
 * replace what this instance remembers of a move out of the cookie made in the meantime.
 * (Found tracing one user, one cookie jar, the flag flipping between database and cookie:
 * a GET with a 'd.' cookie wrote the directory entry at v2087 over a stale v2086; a PATCH that
 * had read the cookie's v2087 moved the session into the database at v2088, marking the cookie
 * store "moved out"; the GET then sealed its stale v2087 over that mark, and answered a cookie
 * with a counter two changes old, both of them answered 200.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a move into the cookie after a move out of it', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  /** A session in the cookie (its directory entry written), changed to counter 1 by a PATCH: sealed, its copy not written yet. */
  async function sealedAhead() {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
    const one = patched((await core.backends.open(created.cookieValue))!, { counter: 1 });
    const sealed = (await core.backends.update(one.changed, 'save', one.concurrency))!;
    expect(sealed.record.backend).to.equal('cookie');
    return { id: created.record.id, sealed };
  }

  /** Runs `move`, with `meanwhile` run once between its directory write and its seal (MirroredStore.moveIn). */
  async function withSealHeld<T>(move: () => Promise<T>, meanwhile: () => Promise<void>): Promise<T> {
    const cookie = (core.backends.stores.cookie as unknown as MirroredStore).primary;
    const moveIn = cookie.moveIn.bind(cookie);
    let first = true;
    cookie.moveIn = async (r, readVersion) => {
      if (first) {
        first = false;
        await meanwhile();
      }
      return moveIn(r, readVersion);
    };
    try {
      return await move();
    } finally {
      cookie.moveIn = moveIn;
    }
  }

  it('does not seal a stale directory entry over a move out made since, which holds later changes', async () => {
    const { id, sealed } = await sealedAhead();
    // A GET whose cookie still names the database read the directory entry: version 1, counter 0
    // (the PATCH's copy, version 2, was still waiting to be written). Read as the entry stands: an
    // open on this instance writes its copy first (SessionBackends.entryAfterSeals), and another
    // instance's read, or one made just before the PATCH's seal, is what lags.
    const stale = (await core.backends.stores.database.load(id))!;
    expect(stale).to.deep.include({ version: 1, heldBy: 'cookie' });
    expect(stale.data.preferences).to.deep.equal({ counter: 0 });
    // The flag says cookie: the GET moves it there. Its directory write (version 2 over 1) lands;
    // before it seals, a PATCH sent with the newer cookie (version 2, counter 1), on a request that
    // sees the flag say database, moves the session there with counter 2 (answered 200).
    let later: Awaited<ReturnType<typeof core.backends.migrate>>;
    const moved = await withSealHeld(
      () => core.backends.migrate(stale, 'cookie'),
      async () => {
        const read = (await core.backends.open(sealed.cookieValue))!;
        expect(read.data.preferences).to.deep.equal({ counter: 1 });
        const two = patched(read, { counter: 2 });
        later = await core.backends.migrate(two.changed, 'database', 'flag', two.concurrency);
      },
    );
    expect(later?.record.backend).to.equal('database');
    expect(later!.record.data.preferences).to.deep.equal({ counter: 2 });
    // The GET is answered with the session as it now is (not logged out, nothing lost), and both
    // cookies the browser may keep open to counter 2.
    expect(moved, 'the GET is answered with a session').to.not.equal(undefined);
    expect(moved!.record.data.preferences, 'the GET answers counter 2').to.deep.equal({ counter: 2 });
    for (const [name, written] of [['the GET', moved!], ['the PATCH', later!]] as const) {
      const opened = await core.backends.open(written.cookieValue);
      expect(opened, `the cookie of ${name} opens`).to.not.equal(undefined);
      expect(opened!.data.preferences, `the cookie of ${name}`).to.deep.equal({ counter: 2 });
    }
    const entry = await core.backends.directory.loadByHash(stale.idHash);
    expect(entry?.data.preferences, 'the directory entry').to.deep.equal({ counter: 2 });
  });

  it('puts the stale mover\'s own change on top of the session the move out wrote', async () => {
    const { id, sealed } = await sealedAhead();
    // The entry as it stands, as above.
    const stale = (await core.backends.stores.database.load(id))!;
    expect(stale.version).to.equal(1);
    // This time the request with the stale cookie changes another preference as it moves the session.
    const mine = patched(stale, { theme: 'light' });
    const moved = await withSealHeld(
      () => core.backends.migrate(mine.changed, 'cookie', 'flag', mine.concurrency),
      async () => {
        const two = patched((await core.backends.open(sealed.cookieValue))!, { counter: 2 });
        await core.backends.migrate(two.changed, 'database', 'flag', two.concurrency);
      },
    );
    expect(moved?.record.backend).to.equal('cookie');
    expect((await core.backends.open(moved!.cookieValue))!.data.preferences).to.deep.equal({ counter: 2, theme: 'light' });
  });

  it('still moves a session back into the cookie once it has been read where it moved, after a move out that carried over several seals', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
    const oldRead = (await core.backends.open(created.cookieValue))!;
    // Three PATCHes seal versions 2, 3 and 4 while a GET holding version 1 moves the session out.
    let cookie = created.cookieValue;
    for (let counter = 1; counter <= 3; counter++) {
      const next = patched((await core.backends.open(cookie))!, { counter });
      cookie = (await core.backends.update(next.changed, 'save', next.concurrency))!.cookieValue;
    }
    const out = (await core.backends.migrate(oldRead, 'database'))!;
    expect(out.record.backend).to.equal('database');
    const inDatabase = (await core.backends.open(core.backends.cookieValue('database', created.record.id)))!;
    expect(inDatabase.data.preferences, 'carried over').to.deep.equal({ counter: 3 });
    // The flag says cookie again: a request that read the moved session moves it back in.
    const back = patched(inDatabase, { theme: 'light' });
    const moved = await core.backends.migrate(back.changed, 'cookie', 'flag', back.concurrency);
    expect(moved?.record.backend).to.equal('cookie');
    expect((await core.backends.open(moved!.cookieValue))!.data.preferences).to.deep.equal({ counter: 3, theme: 'light' });
  });
});
