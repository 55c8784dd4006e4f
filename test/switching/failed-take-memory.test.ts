/**
 * A take of a copy left in Redis that the database failed waits for the session's next open on
 * this instance (SessionBackends.untaken), holding the session's data, and while any such take
 * waits every open on the instance takes the slower path. What it keeps, and for how long:
 * - a session ended meanwhile (a logout) is never opened again: its retry stayed until another
 *   take failed past the session's absolute expiry;
 * - a session past its absolute expiry that nothing opens again (revoked by revoke-all, given a
 *   new id) stayed as long, though any open could forget it;
 * - only an outage's failure is kept: one that fails the same way on every try (a carry-over
 *   too large for its cookie, or outrun by other writers) held every open of the session.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { failNextDirectoryRead, readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a take of a copy left in Redis that the database failed', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('failed-take-memory');
  let core: Core;
  before(() => {
    core = opened();
  });

  const untaken = () => (core.backends as unknown as { untaken: Map<string, { until: number }> }).untaken;

  /** A move out of Redis whose take of the copy left there fails on its directory read with `error`. */
  async function failedTake(error?: Error) {
    const saved = await readThenSavedInRedis(core);
    const failure = failNextDirectoryRead(core, error);
    try {
      await core.backends.migrate(saved.read, 'database', 'flag', undefined, Date.now()).catch(() => undefined);
    } finally {
      failure.restore();
    }
    return saved;
  }

  it('is forgotten when the session ends', async () => {
    const { read } = await failedTake();
    expect(untaken().has(read.idHash), 'the failed take waits for the next open').to.equal(true);
    await core.backends.end(read);
    expect(untaken().has(read.idHash), 'nothing will open it again').to.equal(false);
  });

  it('is forgotten by any open once the session has passed its absolute expiry', async () => {
    const { read } = await failedTake();
    // As if the session's absolute lifetime had run out since (a test cannot wait hours).
    untaken().get(read.idHash)!.until = Date.now() - 1;
    const other = await core.backends.create(makeRecord({}, 'redis'), 'redis');
    expect(await core.backends.open(other.cookieValue), 'another session opens').to.not.equal(undefined);
    expect(untaken().has(read.idHash), 'nothing will open it again').to.equal(false);
  });

  it('is kept only when the database failed it, not for a failure that would come back on every try', async () => {
    const { read } = await failedTake(new Error('not an outage'));
    expect(untaken().has(read.idHash)).to.equal(false);
  });
});
