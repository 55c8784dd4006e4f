/**
 * A move out of Redis takes what saves left in Redis after it read the session: removes that
 * copy, then saves its changes on top of the moved one (SessionBackends.takeLeftBehind,
 * carryOver). Between the two, a request that opened the session — its cookie still naming Redis
 * (a miss there reads through to the moved copy), or naming the database — was served the moved
 * copy without those saves, and a change it made was saved on top of that: its answer lacked a
 * change answered 200 before it was sent, until the carry-over landed. (Found with one writer and
 * two readers sharing a cookie jar while the flag flipped every 150 ms among all three backends:
 * the writer's next answer lacked its previous change, about one a minute.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { answeredOrWaiting, holdRedisEviction, readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a session opened while a move out of Redis takes a copy left there', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('open-during-take');
  let core: Core;
  before(() => {
    core = opened();
  });

  for (const named of ['redis', 'database'] as const) {
    it(`is served with the taken save, its cookie naming ${named}`, async () => {
      const { id, read } = await readThenSavedInRedis(core);
      // The GET moves the session to the database (counter 0), finds counter 1 left in Redis,
      // and takes it: held once the take has removed it, before it saves it on top.
      const hold = holdRedisEviction(core, 2);
      let seen: SessionRecord | undefined;
      try {
        const move = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
        await hold.reached;
        // The writer's next PATCH opens the session with the cookie it holds.
        const opening = core.backends.open(core.backends.cookieValue(named, id)).then((r) => (seen = r));
        // The take is let go once the open has answered, or has stopped to wait for it.
        await answeredOrWaiting(opening);
        hold.release();
        await Promise.all([move, opening]);
      } finally {
        hold.restore();
      }
      expect(seen?.data.preferences, 'counter 1 was answered 200 before this request was sent').to.deep.equal({ counter: 1 });
    });
  }

  it('is served, not held, while a take does not finish (the database stalled)', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    // The take is held once it has removed the copy left in Redis, until the open has answered.
    const hold = holdRedisEviction(core, 2);
    try {
      const move = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
      await hold.reached;
      const served = await core.backends.open(core.backends.cookieValue('database', id));
      expect(served, 'served: the user stays logged in').to.not.equal(undefined);
      hold.release();
      await move;
    } finally {
      hold.restore();
    }
  });
});
