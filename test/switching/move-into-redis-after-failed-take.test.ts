/**
 * A take of a copy left in Redis that the database failed is tried again by the session's next
 * open (SessionBackends.untaken). A move into Redis that waited for that move out went on once it
 * had settled (failed), and one whose open found the retried take held on the database went on
 * past TAKE_WAIT_MS: each wrote the session over the copy left there, whose saves (answered 200)
 * the take then no longer found.
 */
import { expect } from 'chai';
import { ConnectionError } from 'sequelize';
import type { Core } from '../../src/core.js';
import { patched } from './lagging-cookie-core.js';
import { failNextDirectoryRead, readThenSavedInRedis, redisMoveCore, stallNextDirectoryRead } from './redis-move-core.js';

describe('a move into Redis after a take of the copy left there failed on the database', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('move-in-failed-take');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** The database stalls the next directory read (the take's first step), then fails it once `fail` is called. */
  function failNextDirectoryReadLater() {
    const directory = core.backends.directory;
    const loadByHash = directory.loadByHash;
    let fail: () => void = () => {};
    const failed = new Promise<void>((resolve) => (fail = resolve));
    const reached = new Promise<void>((resolve) => {
      directory.loadByHash = async () => {
        directory.loadByHash = loadByHash;
        resolve();
        await failed;
        throw new ConnectionError(new Error('Query read timeout'));
      };
    });
    return { reached, fail: () => fail() };
  }

  function counterOf(record: { data: Record<string, unknown> }): number {
    return (record.data.preferences as { counter: number }).counter;
  }

  for (const kind of ['a GET', 'a PATCH'] as const) {
    it(`keeps the saves that copy holds, for ${kind} that waited for the move out`, async () => {
      const { id, read } = await readThenSavedInRedis(core);
      const failure = failNextDirectoryReadLater();
      const moveOut = core.backends.migrate(read, 'database', 'flag', undefined, Date.now()).catch(() => undefined);
      await failure.reached;
      // A request with the database cookie, opened before the take failed, with the flag saying redis.
      const request = (await core.backends.open(core.backends.cookieValue('database', id)))!;
      const next = kind === 'a PATCH' ? patched(request, { theme: 'light' }) : undefined;
      const moveIn = next ? core.backends.migrate(next.changed, 'redis', 'flag', next.concurrency, Date.now()) : core.backends.migrate(request, 'redis', 'flag', undefined, Date.now());
      await new Promise((r) => setTimeout(r, 100));
      failure.fail();
      await moveOut;
      const written = (await moveIn)!;
      const now = (await core.backends.open(core.backends.cookieValue(written.record.backend, id)))!;
      expect(counterOf(now), 'counter 1 was answered 200').to.equal(1);
      if (next) expect(now.data.preferences, 'and the PATCH').to.deep.include({ theme: 'light' });
    });
  }

  it('keeps the saves that copy holds, for a move whose open found the retried take held', async () => {
    const { id, read } = await readThenSavedInRedis(core);
    const failure = failNextDirectoryRead(core);
    await core.backends.migrate(read, 'database', 'flag', undefined, Date.now()).catch(() => undefined);
    failure.restore();
    // The next open tries the take again; its directory read stalls past TAKE_WAIT_MS.
    const stall = stallNextDirectoryRead(core);
    let written;
    try {
      const request = (await core.backends.open(core.backends.cookieValue('database', id)))!;
      written = (await core.backends.migrate(request, 'redis', 'flag', undefined, Date.now()))!;
    } finally {
      stall.restore();
    }
    // The retried take goes on once released; the next open waits for it.
    const now = (await core.backends.open(core.backends.cookieValue(written.record.backend, id)))!;
    expect(counterOf(now), 'counter 1 was answered 200').to.equal(1);
  });
});
