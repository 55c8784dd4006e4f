/**
 * A tab whose cookie still names the database moves the session into the cookie from the
 * directory entry (written behind, so it lags the seals): the entry takes the move, one version
 * on from what it read, and the cookie refuses it, having sealed that very version with a later
 * change. The refused move sealed the session again at that version, so the entry and the latest
 * seal held different sessions at one version. The cookie store refuses only a save over a
 * strictly newer seal (and carries over, at a move out, only a strictly newer one): a request that
 * went on from the entry's copy at that version — a save following the session into the cookie
 * from the entry, or a move out of the cookie of what the entry held — passed, and the change
 * the cookie had sealed, answered 200, was gone. (Traced in bench:flips runs, the flag flipping
 * every 50–150 ms while browsers wrote.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a move into the cookie refused by a seal of the version it gave the directory entry', function () {
  this.timeout(60_000);
  // Copies written behind stay behind for the whole test (as they do for MIRROR_FLUSH_MS under load).
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  /**
   * The session in the database; `before` runs on it there. Then the writer's PATCH (counter 1),
   * told cookie, moves it into the cookie; a reader's GET with the database cookie is served the
   * entry; the writer's next PATCH (counter 2) is sealed, its copy on its way; and the reader's
   * GET moves what it read into the cookie: the entry takes it (counter 1), the cookie refuses it.
   */
  async function refusedMoveIntoCookie(before: (databaseCookie: string) => Promise<void> = async () => {}) {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'database'), 'database');
    const databaseCookie = created.cookieValue;
    await before(databaseCookie);
    const one = patched((await core.backends.open(databaseCookie))!, { counter: 1 });
    const moved = (await core.backends.migrate(one.changed, 'cookie', 'flag', one.concurrency, Date.now()))!;
    expect(moved.record.backend).to.equal('cookie');
    const read = (await core.backends.open(databaseCookie))!;
    expect(read.data.preferences).to.deep.equal({ counter: 1 });
    const two = patched((await core.backends.open(moved.cookieValue))!, { counter: 2 });
    const saved = (await core.backends.update(two.changed, 'save', two.concurrency))!;
    expect(saved.record.backend).to.equal('cookie');
    const refused = await core.backends.migrate(read, 'cookie', 'flag', undefined, Date.now());
    expect(refused?.record.data.preferences, 'the refused move answers with the seal').to.deep.equal({ counter: 2 });
    const entry = (await core.backends.directory.loadByHash(created.record.idHash))!;
    expect(entry.data.preferences, "the entry holds the move's older copy").to.deep.equal({ counter: 1 });
    return { id: created.record.id, saved, refused: refused!, entry };
  }

  it('refuses a save that follows the session into the cookie from the entry, which merges onto the seal', async () => {
    let early: ReturnType<typeof patched> | undefined;
    // A PATCH (f: 1) that read the session in the database before it moved, told database.
    const { saved, refused } = await refusedMoveIntoCookie(async (databaseCookie) => {
      early = patched((await core.backends.open(databaseCookie))!, { f: 1 });
    });
    // It saves there now: the entry has moved on, and names the cookie; the save follows it there.
    const followed = (await core.backends.update(early!.changed, 'save', early!.concurrency))!;
    expect(followed.record.backend, 'followed into the cookie').to.equal('cookie');
    const expected = { counter: 2, f: 1 };
    expect(followed.record.data.preferences, 'counter 2 and f 1 were both answered 200').to.deep.equal(expected);
    // Whichever cookie the browser keeps, the session holds both changes.
    for (const cookie of [followed.cookieValue, refused.cookieValue, saved.cookieValue]) {
      expect((await core.backends.open(cookie))?.data.preferences).to.deep.equal(expected);
    }
  });

  it('carries the seal over when a move out of the cookie goes on from the entry', async () => {
    const { id, saved, refused, entry } = await refusedMoveIntoCookie();
    // Another GET with the database cookie is served the entry (held by the cookie), changes it
    // (g: 1) and, told database, moves it out of the cookie as the entry holds it (session-write.ts: leavesCookie).
    // The entry as it stands, as another instance reads it: an open on this one writes its copy
    // of the seals first (SessionBackends.entryAfterSeals).
    const again = (await core.backends.stores.database.load(id))!;
    expect(again.version).to.equal(entry.version);
    const { heldBy: _heldBy, ...held } = again;
    const three = patched({ ...held, backend: 'cookie' } as SessionRecord, { g: 1 });
    const movedOut = (await core.backends.migrate(three.changed, 'database', 'flag', three.concurrency, Date.now()))!;
    expect(movedOut.record.backend).to.equal('database');
    const expected = { counter: 2, g: 1 };
    expect(movedOut.record.data.preferences, 'counter 2 and g 1 were both answered 200').to.deep.equal(expected);
    for (const cookie of [movedOut.cookieValue, refused.cookieValue, saved.cookieValue]) {
      expect((await core.backends.open(cookie))?.data.preferences).to.deep.equal(expected);
    }
  });
});
