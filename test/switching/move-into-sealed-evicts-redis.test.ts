/**
 * A move out of Redis into the cookie that finds the session sealed there already (CookieStore
 * .moveIn refuses it, carrying that seal) still removes the copy it read from Redis. (Found with
 * bench:flips: a move took the directory entry, another request of the session followed the
 * entry into the cookie and sealed it before the move's own seal, and the move wrote its change
 * onto that seal — leaving the Redis copy it read in place. A PATCH whose cookie still named
 * Redis was served that copy and saved there, answered 200: from then on two sessions took
 * changes, and the browser kept the one whose cookie came last. The other's changes were gone.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore } from './redis-move-core.js';

describe('a move into the cookie refused by a seal made since', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('move-into-sealed');
  let core: Core;
  before(() => {
    core = opened();
  });

  /**
   * A session in Redis at {w0: 0}; a PATCH (w1: 1) read it there and moves it into the cookie.
   * Once the move has taken the directory entry, and before it seals, another PATCH (w2: 2),
   * whose cookie names the database, reads that entry and moves it into the cookie first.
   */
  async function movedOntoASeal() {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'redis'), 'redis');
    const read = (await core.backends.open(created.cookieValue))!;
    const directory = core.backends.directory;
    const moveIn = directory.moveIn;
    let other: Promise<unknown> | undefined;
    directory.moveIn = async (record: SessionRecord, readVersion: number) => {
      const taken = await moveIn.call(directory, record, readVersion);
      directory.moveIn = moveIn;
      other = (async () => {
        const entry = (await core.backends.open(core.backends.cookieValue('database', read.id)))!;
        expect(entry.heldBy, 'the entry the move took').to.equal('cookie');
        const two = patched(entry, { w2: 2 });
        const sealed = await core.backends.migrate(two.changed, 'cookie', 'flag', two.concurrency);
        expect(sealed?.record.backend).to.equal('cookie');
      })();
      await other;
      return taken;
    };
    try {
      const one = patched(read, { w1: 1 });
      const moved = (await core.backends.migrate(one.changed, 'cookie', 'flag', one.concurrency))!;
      expect(other, 'the other PATCH ran inside the move').to.not.equal(undefined);
      expect(moved.record.backend).to.equal('cookie');
      expect(moved.record.data.preferences, 'both changes, in the seal').to.deep.equal({ w0: 0, w1: 1, w2: 2 });
      return { redisCookie: created.cookieValue, moved };
    } finally {
      directory.moveIn = moveIn;
    }
  }

  it('leaves no copy in Redis', async () => {
    const { moved } = await movedOntoASeal();
    expect(await core.backends.stores.redis.loadHeld!(moved.record.id)).to.equal(undefined);
  });

  it('serves a cookie naming Redis the session with both changes, and its save goes on top of them', async () => {
    const { redisCookie, moved } = await movedOntoASeal();
    // A tab's request sent before the browser had either answer: its cookie still names Redis.
    const read = (await core.backends.open(redisCookie))!;
    expect(read.data.preferences, 'the changes answered 200').to.deep.equal({ w0: 0, w1: 1, w2: 2 });
    // Its PATCH, the flag still on the cookie: the session goes where the flag says, as SessionWriter moves it.
    const three = patched(read, { w3: 3 });
    const saved = await core.backends.migrate(three.changed, 'cookie', 'flag', three.concurrency);
    expect(saved?.record.data.preferences).to.deep.equal({ w0: 0, w1: 1, w2: 2, w3: 3 });
    // Where the browser's cookie from the move (the seal) now reads the session: every change.
    const now = await core.backends.open(moved.cookieValue);
    expect(now!.data.preferences).to.deep.equal({ w0: 0, w1: 1, w2: 2, w3: 3 });
  });
});
