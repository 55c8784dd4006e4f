/**
 * The directory's other calls a request waits for, after its session was written: the claim of a
 * database copy that served a session whose backend was down (`adopt`, awaited after the save,
 * touch or keep of session-write.ts), a failed move's entry given back before the fallback's
 * write (`giveBack`), and the copies a cookie session's freshest read writes first (`latest`:
 * the mirrored store's flush). On the bare sessions table each waited for pg's query_timeout
 * (30 s) when the database stalled right then: the user had no answer for that long, for a
 * write already made. Now each has the database backend's deadline, as the directory's reads
 * (stalled-directory-read.test.ts): the request goes on as if the call had failed, while the
 * stall still holds; the call let go lands later as it would have (each is a compare-and-set at
 * a version: database-statements.ts, `claim`, `giveBack`), and the store metrics count it.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { answeredWhileHeld, redisMoveCore, stallNextDirectoryCall } from './redis-move-core.js';

describe('a directory write on the request path while the database stalls', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('stalled-dir-write');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** The database's operations of `operation` counted with `outcome` (session_store_operations_total). */
  const counted = (operation: 'load' | 'save', outcome: 'success' | 'timeout') => core.metrics.storeOperations.series({ backend: 'database', operation, outcome }).value;

  it('a claim of the database copy that served a Redis session: answered while the claim is held, which lands later', async () => {
    const created = await core.backends.create(makeRecord({}, 'redis'), 'redis');
    // Served (and saved) from its database copy while Redis was down: the request adopts it.
    const served = { ...created.record, backend: 'database' as const };
    const timeouts = counted('save', 'timeout');
    const stall = stallNextDirectoryCall(core, 'claim');
    try {
      const adopted = core.backends.adopt(served);
      await stall.reached;
      await answeredWhileHeld(adopted);
      expect(counted('save', 'timeout') - timeouts, 'the claim let go at the deadline, counted as a timeout').to.equal(1);
      stall.release();
      expect(await stall.landed, 'the claim, let go, still lands').to.equal(undefined);
    } finally {
      stall.restore();
    }
    expect((await core.backends.directory.loadByHash(created.record.idHash))?.backend, 'the directory names the database copy').to.equal('database');
  });

  it('a move into Redis that Redis refuses: answered while the entry given back is held, its change kept', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'database'), 'database');
    const read = (await core.backends.open(created.cookieValue))!;
    const redis = core.backends.stores.redis as unknown as MirroredStore;
    const moveIn = redis.primary.moveIn;
    // Redis fails the session's write after the move's entry names it: the entry is given back.
    redis.primary.moveIn = () => Promise.reject(new BackendUnavailableError('redis', 'error'));
    const stall = stallNextDirectoryCall(core, 'giveBack');
    let written: Written | undefined;
    try {
      const mine = patched(read, { theme: 'dark' });
      const moved = core.backends.migrate(mine.changed, 'redis', 'flag', mine.concurrency, Date.now());
      await stall.reached;
      written = await answeredWhileHeld(moved);
      stall.release();
      await stall.landed;
    } finally {
      stall.restore();
      redis.primary.moveIn = moveIn;
    }
    expect(written?.record.backend, 'the fallback took the move').to.equal('database');
    // The entry given back late finds the entry moved on, and leaves it: the change answered stays.
    const now = await core.backends.open(written!.cookieValue);
    expect(now?.data.preferences).to.deep.equal({ counter: 0, theme: 'dark' });
    expect((await core.backends.directory.loadByHash(created.record.idHash))?.backend).to.equal('database');
  });

  it('a cookie session’s freshest copy: answered 503 while the copies written first are held', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
    const read = (await core.backends.open(created.cookieValue))!;
    const stall = stallNextDirectoryCall(core, 'upsertMany');
    try {
      // A save of the session sealed here: its copy waits to be written behind, and is held.
      const one = patched(read, { counter: 1 });
      expect((await core.backends.update(one.changed, 'save', one.concurrency))?.record.version).to.equal(read.version + 1);
      const latest = core.backends.latest(read).then(() => undefined, (err: unknown) => err);
      await stall.reached;
      const answer = await answeredWhileHeld(latest);
      expect(answer, `a 503 for the database backend, not ${String(answer)}`).to.be.instanceOf(BackendUnavailableError);
      expect((answer as BackendUnavailableError).reason).to.equal('timeout');
      stall.release();
      await stall.landed;
    } finally {
      stall.restore();
    }
    // Once the copy is written, the freshest copy is read as before.
    expect((await core.backends.latest(read))?.data.preferences).to.deep.equal({ counter: 1 });
  });
});
