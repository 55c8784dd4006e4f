/**
 * A move into Redis writes the session's directory entry first, at the version it moves to, then
 * Redis. When a save has put Redis at that version first, Redis refuses the move, and the entry
 * is left at that version with the move's data, naming Redis. A save that then conflicts in the
 * database (a tab that missed the flip) read that entry and followed the session to Redis with
 * its changes merged onto the entry's data: Redis's compare-and-set, on the version alone, took
 * it, and the other save's change (answered 200) was gone. (Traced with the flip harness: 5
 * writers and a reader per session, the flag flipping every 100–150 ms; a read a moment later
 * showed a preference older than one already answered.)
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a save that follows its session into redis after a move there was refused', function () {
  this.timeout(60_000);
  // Copies written behind late (MIRROR_FLUSH_MS 10 s): the entry keeps the refused move's data
  // until the save below has read it, as it does for a moment under load.
  const lagging = laggingCookieCore({ REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `refused-move-${randomBytes(4).toString('hex')}:` });
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('merges onto the session in redis, not onto the entry the move left', async () => {
    const { backends } = core;
    const created = await backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }), 'database');
    // A tab reads the session in the database, and has yet to save.
    const read = (await backends.open(created.cookieValue))!;
    // The flag says Redis: a request moves the session there.
    const intoRedis = (await backends.migrate(read, 'redis'))!;
    expect(intoRedis.record.backend).to.equal('redis');
    // Another instance, still reading its entry as the database's copy, is about to move it too.
    const entry = (await backends.stores.database.load(created.record.id))!;
    expect(entry.heldBy).to.equal('redis');
    // Meanwhile a request saves a change in Redis, at the version that move will write: answered 200.
    const one = patched((await backends.open(intoRedis.cookieValue))!, { counter: 1 });
    expect((await backends.update(one.changed, 'save', one.concurrency))?.record.version).to.equal(entry.version + 1);
    // The move: the entry takes it, Redis refuses it (it holds that version already).
    await backends.migrate(entry, 'redis');
    const left = (await backends.stores.database.load(created.record.id))!;
    expect(left.version, 'the entry at the version Redis holds').to.equal(entry.version + 1);
    expect(left.data.preferences, 'with the refused move’s data').to.deep.equal({ counter: 0 });
    // The tab saves its change: refused in the database, it follows the session to Redis.
    const mine = patched(read, { theme: 'light' });
    const saved = (await backends.update(mine.changed, 'save', mine.concurrency))!;
    expect(saved.record.backend).to.equal('redis');
    for (const [name, cookie] of [['the tab', saved.cookieValue], ['the request that saved in redis', intoRedis.cookieValue]] as const) {
      const now = await backends.open(cookie);
      expect(now?.data.preferences, `the session by the cookie of ${name}`).to.deep.equal({ counter: 1, theme: 'light' });
    }
  });
});
