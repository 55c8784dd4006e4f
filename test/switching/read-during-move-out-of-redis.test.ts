/**
 * A move out of Redis writes the copy it read, 1,024 versions on (MOVE_OUT_STEP), and
 * only then takes what saves left in Redis since it read it (SessionBackends.takeLeftBehind). A
 * request that read such a save there, and moved the session too while that move was under way,
 * was refused (the moved copy's version is past anything it read), touched the moved copy — still
 * without that save — and answered with the cookie naming it: a read with that cookie showed the
 * value one change older than a change already answered 200, until the take put it back.
 * (Found with readers and a writer sharing one cookie jar while the flag flipped every 150 ms
 * among all three backends: 4–13 such reads a run, against 0–2 before the step.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { patched } from './lagging-cookie-core.js';
import { answeredOrWaiting, answeredWhileHeld, holdRedisEviction, readThenSavedInRedis, redisMoveCore, stallNextDirectoryRead } from './redis-move-core.js';

describe('a read during a move out of Redis that saves reached after the move read it', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('read-during-move');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('does not answer with a cookie whose session lacks the change the request read', async () => {
    const { id, cookieValue, read: firstRead } = await readThenSavedInRedis(core);
    // The other reader's GET reads counter 1 in Redis.
    const secondRead = (await core.backends.open(cookieValue))!;
    expect(secondRead.data.preferences).to.deep.equal({ counter: 1 });

    // The first GET moves the session to the database. Held once it has written the moved copy
    // (counter 0) and evicted what it read from Redis, before it takes the copy left there.
    const hold = holdRedisEviction(core, 1);
    let firstMove: Promise<Written | undefined>;
    let seen: unknown;
    try {
      firstMove = core.backends.migrate(firstRead, 'database', 'flag', undefined, Date.now());
      await hold.reached;
      // The second GET moves it too, and answers: the reads that follow send the cookie it gives.
      const secondMove = core.backends.migrate(secondRead, 'database', 'flag', undefined, Date.now()).then(async (written) => {
        seen = written && (await core.backends.open(written.cookieValue))?.data.preferences;
        return written;
      });
      // The first move is let go once the second has answered, or has stopped to wait for it.
      await answeredOrWaiting(secondMove);
      hold.release();
      await Promise.all([firstMove, secondMove]);
    } finally {
      hold.restore();
    }
    expect(seen, 'a read with the cookie the second GET answered with: counter 1 was answered 200 before it').to.deep.equal({ counter: 1 });
    const now = await core.backends.open(core.backends.cookieValue('database', id));
    expect(now?.data.preferences).to.deep.equal({ counter: 1 });
  });

  it('is answered, not held, while that move does not finish (the database stalled), its change kept', async () => {
    const { id, cookieValue, read: firstRead } = await readThenSavedInRedis(core);
    const secondRead = (await core.backends.open(cookieValue))!;
    expect(secondRead.data.preferences).to.deep.equal({ counter: 1 });
    // The first GET moves the session to the database (counter 0), finds counter 1 left in
    // Redis, and asks the directory where the session is before it takes that copy: the
    // database does not answer (held until the database backend's deadline, then 503; the take
    // is left to the session's next open).
    const stall = stallNextDirectoryRead(core);
    try {
      const firstMove = core.backends.migrate(firstRead, 'database', 'flag', undefined, Date.now()).then(() => undefined, (err: unknown) => err);
      await stall.reached;
      // The other tab's PATCH, which read counter 1, moves the session too, with its change.
      const second = patched(secondRead, { theme: 'light' });
      expect(await answeredWhileHeld(core.backends.migrate(second.changed, 'database', 'flag', second.concurrency, Date.now()))).to.not.equal(undefined);
      stall.release();
      const failed = await firstMove;
      if (failed !== undefined) expect(failed, 'the first move, past the database backend’s deadline').to.be.instanceOf(BackendUnavailableError);
    } finally {
      stall.restore();
    }
    const now = await core.backends.open(core.backends.cookieValue('database', id));
    expect(now?.data.preferences, 'counter 1 and the PATCH were both answered 200').to.deep.equal({ counter: 1, theme: 'light' });
  });
});
