/**
 * A move out of Redis leaves the Redis copy where saves reached it after the move read the
 * session, and takes it once its moved copy is written (SessionBackends.takeLeftBehind). A move
 * back into Redis in between — another request of the session, told Redis, moving the moved copy
 * it read — wrote over that copy: its version is 1,024 past anything the copy left behind reaches
 * (MOVE_OUT_STEP), so the move in took it for an older one. The take then found Redis
 * holding the session again, put back only its own request's changes, and the saves in the copy
 * it had come to take, answered 200, were gone for good. (Found with five writers and a reader
 * per session while the flag flipped every 100–150 ms among all three backends: the last changes
 * of two writers, about one run in three.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { patched } from './lagging-cookie-core.js';
import { answeredOrWaiting, answeredWhileHeld, holdRedisEviction, readThenSavedInRedis, redisMoveCore, stallNextDirectoryRead } from './redis-move-core.js';

describe('a move into Redis while a move out of Redis has yet to take the copy left there', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('move-in-during-take');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('does not write over the saves that copy holds', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    // The GET moves the session to the database (counter 0), and finds counter 1 left in Redis:
    // held there, before it takes that copy.
    const hold = holdRedisEviction(core, 1);
    let moveIn: Promise<Written | undefined> | undefined;
    try {
      const moveOut = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
      await hold.reached;
      // Another request, told Redis, moves back what it read of the moved copy (a move retried
      // after it found the session moved: `current`).
      const moved = (await core.backends.directory.load(id))!;
      expect(moved.data.preferences).to.deep.equal({ counter: 0 });
      moveIn = core.backends.migrate(moved, 'redis', 'flag', undefined, Date.now());
      // The take is let go once the move in has answered, or has stopped to wait for it.
      await answeredOrWaiting(moveIn);
      hold.release();
      await Promise.all([moveOut, moveIn]);
    } finally {
      hold.restore();
    }
    const now = await core.backends.open(core.backends.cookieValue('redis', id));
    expect(now?.data.preferences, 'counter 1 was answered 200').to.deep.equal({ counter: 1 });
  });

  it('is answered, not held, while that move does not finish (the database stalled), and still does not write over them', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    const database = core.backends.cookieValue('database', id);
    // The GET moves the session to the database (counter 0), finds counter 1 left in Redis, and
    // asks the directory where the session is before it takes that copy: the database does not
    // answer (held until pg's query_timeout).
    const stall = stallNextDirectoryRead(core);
    try {
      const moveOut = core.backends.migrate(read, 'database', 'flag', undefined, Date.now());
      await stall.reached;
      // Another tab, told Redis, changes the moved copy it read and moves it back: answered,
      // its change kept. Then a later request of the session, told Redis too, moves it again.
      const first = patched((await core.backends.open(database))!, { theme: 'light' });
      expect(first.changed.data.preferences).to.deep.equal({ counter: 0, theme: 'light' });
      expect(await answeredWhileHeld(core.backends.migrate(first.changed, 'redis', 'flag', first.concurrency, Date.now())), 'the first move in').to.not.equal(undefined);
      const later = patched((await core.backends.open(database))!, { font: 'large' });
      expect(await answeredWhileHeld(core.backends.migrate(later.changed, 'redis', 'flag', later.concurrency, Date.now())), 'the later move in').to.not.equal(undefined);
      stall.release();
      await moveOut;
    } finally {
      stall.restore();
    }
    const now = await core.backends.open(core.backends.cookieValue('redis', id));
    expect(now?.data.preferences, 'counter 1 was answered 200, and so were both moves in').to.deep.equal({ counter: 1, theme: 'light', font: 'large' });
  });
});
