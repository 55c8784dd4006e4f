/**
 * A save that finds its session moved since its request read it follows the session to where it
 * now is. When the session moves on again while the save is on its way there (into a sealed
 * cookie, by another request), the save follows it again: written where it had followed it, into
 * a directory entry the cookie now holds, it continued the session beside the live seal — two
 * copies, each taking changes answered 200, of which the browser keeps one. (Found with five
 * writers and a reader per session while the flag flipped every 100–150 ms among all three
 * backends: up to 4 changes lost in a 60 s run.)
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a save whose session moves on again while the save follows it', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore({ REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `follows-twice-${randomBytes(4).toString('hex')}:` });
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('follows it into the cookie, and the session keeps both changes', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
    // A PATCH reads the session in Redis.
    const read = (await core.backends.open(created.cookieValue))!;
    // Another request moves it to the database meanwhile.
    const out = (await core.backends.migrate((await core.backends.open(created.cookieValue))!, 'database'))!;
    expect(out.record.backend).to.equal('database');
    // The PATCH saves: no copy in Redis any more, so it follows the session to the database. As its
    // save reaches the database, a third request moves the session into the cookie, with a change.
    const database = core.backends.stores.database;
    const save = database.save.bind(database);
    let intoCookie: Written | undefined;
    database.save = async (r, expected) => {
      if (!intoCookie) {
        const one = patched((await core.backends.open(out.cookieValue))!, { counter: 1 });
        intoCookie = (await core.backends.migrate(one.changed, 'cookie', 'flag', one.concurrency))!;
        expect(intoCookie.record.backend).to.equal('cookie');
      }
      return save(r, expected);
    };
    let saved: Written | undefined;
    try {
      const mine = patched(read, { theme: 'light' });
      saved = await core.backends.update(mine.changed, 'save', mine.concurrency);
    } finally {
      database.save = save;
    }
    expect(saved, 'the PATCH is answered 200').to.not.equal(undefined);
    // Whichever of the two cookies the browser keeps, the session has both changes.
    for (const [name, cookie] of [['the PATCH', saved!.cookieValue], ['the move into the cookie', intoCookie!.cookieValue]] as const) {
      const now = await core.backends.open(cookie);
      expect(now?.data.preferences, `the session by the cookie of ${name}`).to.deep.equal({ counter: 1, theme: 'light' });
    }
  });
});
