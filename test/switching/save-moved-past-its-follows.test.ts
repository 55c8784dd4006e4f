/**
 * A save follows its session to where moves put it up to SAVE_FOLLOWS (3) times
 * (save-follows-twice.test.ts). Moved on once more while the save was on its way, the save was
 * written where it had followed the session to — a directory entry a sealed cookie now held —
 * beside the live seal, and answered 200: the browser keeps the seal's cookie, without the change.
 * It is refused (409, the client retries) instead.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { SessionConflictError } from '../../src/sessions/errors.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a save whose session moves on more often than the save follows it', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore({ REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `moved-past-follows-${randomBytes(4).toString('hex')}:` });
  let core: Core;
  before(() => {
    core = lagging();
  });

  /**
   * A PATCH reads the session in Redis; another request moves it to the database; then, each time
   * the PATCH's save reaches a store, another request moves the session on (into the cookie, back
   * to the database, …) with a change of its own, until `moves` moves in all.
   */
  async function patchWhileMoved(moves: number) {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
    const read = (await core.backends.open(created.cookieValue))!;
    let last = (await core.backends.migrate((await core.backends.open(created.cookieValue))!, 'database'))!;
    const { database, cookie } = core.backends.stores;
    const saves = { database: database.save.bind(database), cookie: cookie.save.bind(cookie) };
    let moved = 1;
    let moving = false;
    const movingOn = (from: 'database' | 'cookie'): typeof database.save => async (r, expected) => {
      if (!moving && moved < moves) {
        moving = true;
        try {
          const one = patched((await core.backends.open(last.cookieValue))!, { counter: moved });
          last = (await core.backends.migrate(one.changed, from === 'database' ? 'cookie' : 'database', 'flag', one.concurrency))!;
          moved++;
        } finally {
          moving = false;
        }
      }
      return saves[from](r, expected);
    };
    database.save = movingOn('database');
    cookie.save = movingOn('cookie');
    try {
      const mine = patched(read, { theme: 'light' });
      const saved: Written | SessionConflictError | undefined = await core.backends.update(mine.changed, 'save', mine.concurrency).catch((err: unknown) => {
        if (err instanceof SessionConflictError) return err;
        throw err;
      });
      expect(moved, 'moves made').to.equal(moves);
      return { saved, last };
    } finally {
      database.save = saves.database;
      cookie.save = saves.cookie;
    }
  }

  it('follows it three times, and the session keeps both changes', async () => {
    const { saved, last } = await patchWhileMoved(3);
    expect(saved, 'the PATCH is answered 200').to.not.be.instanceOf(SessionConflictError).and.not.equal(undefined);
    for (const [name, cookieValue] of [['the PATCH', (saved as Written).cookieValue], ['the last move', last.cookieValue]] as const) {
      expect((await core.backends.open(cookieValue))?.data.preferences, `the session by the cookie of ${name}`).to.deep.equal({ counter: 2, theme: 'light' });
    }
  });

  it('is refused (409) when the session moves on a fourth time, not answered 200 and written beside it', async () => {
    const { saved, last } = await patchWhileMoved(4);
    expect(saved, 'answered').to.not.equal(undefined);
    const kept = (await core.backends.open(last.cookieValue))?.data.preferences;
    // Answered 200, the browser (keeping the last move's cookie) must see the change; refused, the client retries it.
    if (saved instanceof SessionConflictError) expect(kept, 'the session after a 409').to.deep.equal({ counter: 3 });
    else expect(kept, 'the session by the cookie of the last move, after a 200').to.deep.equal({ counter: 3, theme: 'light' });
  });
});
