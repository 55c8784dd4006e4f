/**
 * A move out of Redis then asks Redis whether a save left a newer copy there (SessionBackends
 * redisCopy). The eviction has just removed the copy, so Redis misses, and a miss in the mirrored
 * store reads through to the database copy, which that question then throws away: every move out
 * of Redis read the database once for nothing, and a database whose reads stalled held the move
 * (the read through has no deadline of its own) until PostgreSQL's query_timeout, 30 s.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore } from './redis-move-core.js';

describe('a move out of Redis', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('move-out-redis-only');
  let core: Core;
  before(() => {
    core = opened();
  });

  for (const target of ['cookie', 'database'] as const) {
    it(`into ${target} asks the database for no read, and is not held by one that stalls`, async () => {
      const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
      const one = patched((await core.backends.open(created.cookieValue))!, { counter: 1 });
      // The database takes writes, and leaves every read unanswered until the test ends.
      const directory = core.backends.directory;
      const load = directory.load;
      const stalled: (() => void)[] = [];
      let asked!: () => void;
      const readAsked = new Promise<'a database read'>((resolve) => (asked = () => resolve('a database read')));
      directory.load = (token) => {
        asked();
        return new Promise((resolve, reject) => stalled.push(() => load.call(directory, token).then(resolve, reject)));
      };
      try {
        const move = core.backends.migrate(one.changed, target, 'flag', one.concurrency);
        const first = await Promise.race([move.then(() => 'the move'), readAsked]);
        expect(first, 'the move answered before it asked the database for a read').to.equal('the move');
        expect(stalled, 'database reads asked').to.have.length(0);
        const moved = (await move)!;
        expect(moved.record.backend).to.equal(target);
        expect(moved.record.data.preferences).to.deep.equal({ counter: 1 });
      } finally {
        directory.load = load;
        for (const answer of stalled) answer();
      }
    });
  }
});
