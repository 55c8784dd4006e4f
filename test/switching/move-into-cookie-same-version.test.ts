/**
 * A tab whose cookie still names the database, after its session moved into a sealed cookie, is
 * served the database entry (written behind, so it lags the seals) and moves it into the cookie
 * again. Such a move can write the entry one version on from what it read while the cookie has
 * already sealed that version with a later change (its copy still on its way): the cookie store
 * refuses it (a newer seal), but the entry keeps the mover's older data at the seal's version.
 * The next such tab read that entry, and its move into the cookie was checked only against seals
 * strictly newer than what it read: none. It sealed the older data a version past the change, and
 * every request after was served that seal: the change, answered 200, was lost.
 * (Found with a writer and two readers sharing one cookie jar while the flag flipped every
 * 150 ms among all three backends, each PATCH setting one of sixteen preference slots.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a move into the cookie that read a lagging database entry at the version the cookie sealed', function () {
  this.timeout(60_000);
  // Copies written behind stay behind for the whole test (as they do for MIRROR_FLUSH_MS under load).
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('keeps the change the cookie sealed at that version', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'database'), 'database');
    const databaseCookie = created.cookieValue;
    // The writer's PATCH (counter 1), told cookie, moves the session into the cookie.
    const one = patched((await core.backends.open(databaseCookie))!, { counter: 1 });
    const moved = (await core.backends.migrate(one.changed, 'cookie', 'flag', one.concurrency, Date.now()))!;
    expect(moved.record.backend).to.equal('cookie');
    // A reader's GET with the database cookie: served the entry (counter 1, held by the cookie).
    const firstRead = (await core.backends.open(databaseCookie))!;
    expect(firstRead.data.preferences).to.deep.equal({ counter: 1 });
    // The writer's next PATCH (counter 2) with the cookie it was given: sealed, answered 200; its copy is written behind.
    const two = patched((await core.backends.open(moved.cookieValue))!, { counter: 2 });
    const saved = (await core.backends.update(two.changed, 'save', two.concurrency))!;
    // The reader's GET moves what it read into the cookie: the entry takes it, the cookie refuses it.
    await core.backends.migrate(firstRead, 'cookie', 'flag', undefined, Date.now());
    // The other reader's GET with the database cookie reads that entry, and moves it too.
    const secondRead = (await core.backends.open(databaseCookie))!;
    await core.backends.migrate(secondRead, 'cookie', 'flag', undefined, Date.now());
    // And a third, after it.
    const thirdRead = (await core.backends.open(databaseCookie))!;
    await core.backends.migrate(thirdRead, 'cookie', 'flag', undefined, Date.now());
    // The writer's next request, with the cookie the PATCH answered.
    const now = await core.backends.open(saved.cookieValue);
    expect(now?.data.preferences, 'counter 2 was answered 200').to.deep.equal({ counter: 2 });
  });
});
