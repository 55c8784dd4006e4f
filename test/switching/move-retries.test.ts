/**
 * A move refused by the directory entry (the session changed since the mover read it) reads the
 * session again and retries as often as a save merging over concurrent saves does. (Found with
 * five writers a session, one cookie jar, the flag flipping among database, cookie and Redis
 * every 100–150 ms: a move into the cookie, refused three times in a row by the other tabs' saves
 * in the database, gave up, and its change was answered 409 session_conflict, where a save
 * in place merges over twenty.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a move refused by saves made since it read the session', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('tries again past three refusals, and keeps its own change and the saves\' ones', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'database'), 'database');
    const database = core.backends.cookieValue('database', created.record.id);
    const mine = patched((await core.backends.open(database))!, { theme: 'light' });
    // Before each of the move's first four tries, another tab's save lands in the database (read
    // afresh, counter one up): each try is refused, having read the session before that save.
    const cookie = core.backends.stores.cookie;
    const moveIn = cookie.moveIn.bind(cookie);
    let saves = 0;
    cookie.moveIn = async (r, readVersion) => {
      if (saves < 4) {
        saves++;
        const other = patched((await core.backends.open(database))!, { counter: saves });
        expect(await core.backends.update(other.changed, 'save', other.concurrency), `save ${saves}`).to.not.equal(undefined);
      }
      return moveIn(r, readVersion);
    };
    let moved: Awaited<ReturnType<typeof core.backends.migrate>>;
    try {
      moved = await core.backends.migrate(mine.changed, 'cookie', 'flag', mine.concurrency);
    } finally {
      cookie.moveIn = moveIn;
    }
    expect(moved, 'the move gives up (409 session_conflict)').to.not.equal(undefined);
    expect(saves).to.equal(4);
    expect(moved!.record.backend).to.equal('cookie');
    expect((await core.backends.open(moved!.cookieValue))!.data.preferences).to.deep.equal({ counter: 4, theme: 'light' });
  });
});
