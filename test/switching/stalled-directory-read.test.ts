/**
 * The directory (the bare sessions table, no breaker) is read on the request path after the
 * database has just answered: by a move the directory entry refused, for where the session went
 * (SessionBackends.current), and by a move out of Redis, before it takes the copy left there.
 * When the database stalled right then, that read waited for pg's query_timeout (30 s): the user
 * had no answer for that long, where the database backend's own reads give up at its deadline
 * and answer 503. Now the read has that deadline too: answered 503 while the stall still holds.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { answeredWhileHeld, readThenSavedInRedis, redisMoveCore, stallNextDirectoryRead } from './redis-move-core.js';

describe('a directory read on the request path while the database stalls', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('stalled-directory');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** The database's loads that timed out (session_store_operations_total). */
  const loadTimeouts = () => core.metrics.storeOperations.series({ backend: 'database', operation: 'load', outcome: 'timeout' }).value;

  /** What a request failing with `err` is answered: a 503 for the database backend's timeout, as its own reads are. */
  function expectDatabaseTimeout(err: unknown) {
    expect(err, `a 503 for the database backend, not ${String(err)}`).to.be.instanceOf(BackendUnavailableError);
    expect((err as BackendUnavailableError).backend).to.equal('database');
    expect((err as BackendUnavailableError).reason).to.equal('timeout');
  }

  it('a move the directory entry refused: answered 503 while its read of where the session went is held', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'database'), 'database');
    const read = (await core.backends.open(created.cookieValue))!;
    // Another tab saves after this request read the session: the directory entry moves on, and
    // refuses this request's move into Redis, which then reads where the session is now.
    const other = patched(read, { counter: 1 });
    expect((await core.backends.update(other.changed, 'save', other.concurrency))?.record.version).to.equal(read.version + 1);
    const timeouts = loadTimeouts();
    const stall = stallNextDirectoryRead(core);
    try {
      const mine = patched(read, { theme: 'dark' });
      const answer = await answeredWhileHeld(core.backends.migrate(mine.changed, 'redis', 'flag', mine.concurrency, Date.now()).then(() => undefined, (err: unknown) => err));
      expectDatabaseTimeout(answer);
      expect(loadTimeouts() - timeouts, 'the read let go, counted as the database backend’s own timeouts').to.equal(1);
    } finally {
      stall.restore();
    }
    const now = await core.backends.open(created.cookieValue);
    expect(now?.data.preferences, 'the other tab’s save').to.deep.equal({ counter: 1 });
  });

  it('a move out of Redis whose take of the copy left there is held: answered 503, and the next open takes it', async () => {
    const { cookieValue, read } = await readThenSavedInRedis(core);
    const stall = stallNextDirectoryRead(core);
    try {
      const answer = await answeredWhileHeld(core.backends.migrate(read, 'database', 'flag', undefined, Date.now()).then(() => undefined, (err: unknown) => err));
      expectDatabaseTimeout(answer);
    } finally {
      stall.restore();
    }
    // Answered 503, the browser keeps its cookie (Redis): its next request finds counter 1, answered 200 before the move.
    const next = await core.backends.open(cookieValue);
    expect(next?.data.preferences, 'the save left in Redis').to.deep.equal({ counter: 1 });
  });
});

describe('a directory read on the request path while the database is slow but answers, another backend the fallback', function () {
  this.timeout(60_000);
  // The database backend's own deadline is the short one then (it fails over to Redis); the
  // directory has nothing to fail over to, and waits as the last resort does.
  const opened = redisMoveCore('slow-directory', { SESSION_FALLBACK: 'redis', STORE_TIMEOUT_MS: '100', LAST_RESORT_TIMEOUT_MS: '60000' });
  let core: Core;
  before(() => {
    core = opened();
  });

  it('a move out of Redis whose take reads a slow directory: moved, taken, answered', async () => {
    const { cookieValue, read } = await readThenSavedInRedis(core);
    const stall = stallNextDirectoryRead(core);
    try {
      const moving = core.backends.migrate(read, 'database', 'flag', undefined, Date.now()).then(() => 'answered', (err: unknown) => err);
      await stall.reached;
      // Past the 100 ms deadline and all its grace (ten deadlines), short of the last resort's.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      stall.release();
      expect(await moving, 'not a 503 for a database that answered').to.equal('answered');
    } finally {
      stall.restore();
    }
    const next = await core.backends.open(cookieValue);
    expect(next?.data.preferences, 'the save left in Redis, taken').to.deep.equal({ counter: 1 });
  });
});
