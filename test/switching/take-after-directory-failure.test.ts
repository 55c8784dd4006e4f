/**
 * A move out of Redis takes what saves left in Redis after it read the session
 * (SessionBackends.takeLeftBehind): it first asks the directory where the session is. When the
 * database failed that read (pg's query_timeout, a connection lost), the move was refused (503)
 * with the session already moved, and the copy left in Redis stayed there below the moved copy's
 * version (MOVE_OUT_STEP): the browser's retry read it, moved it, was refused by the
 * directory entry, and went on from the moved copy without it. Its saves, answered 200, were
 * never seen again.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { isDatabaseOutageError } from '../../src/db/database.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { patched } from './lagging-cookie-core.js';
import { failNextDirectoryRead, readThenSavedInRedis, redisMoveCore } from './redis-move-core.js';

describe('a move out of Redis whose take of the copy left there fails on the database', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('take-after-failure');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** What the request that moved the session answered: 200 (its record) or 503 (the browser retries). */
  async function answerOf(move: Promise<unknown>): Promise<'200' | '503'> {
    try {
      expect(await move, 'moved').to.not.equal(undefined);
      return '200';
    } catch (err) {
      expect(err instanceof BackendUnavailableError || isDatabaseOutageError(err), `a 503, not a 500: ${String(err)}`).to.equal(true);
      return '503';
    }
  }

  /** The browser's next request of the session, as the session middleware serves it with the flag saying database. */
  async function nextRequest(cookieValue: string, change?: Record<string, unknown>): Promise<SessionRecord> {
    const record = (await core.backends.open(cookieValue))!;
    expect(record, 'served').to.not.equal(undefined);
    if (!change) {
      if (record.backend !== 'database') await core.backends.migrate(record, 'database', 'flag', undefined, Date.now());
      return record;
    }
    const next = patched(record, change);
    const written = record.backend === 'database' ? await core.backends.update(next.changed, 'save', next.concurrency) : await core.backends.migrate(next.changed, 'database', 'flag', next.concurrency, Date.now());
    return written!.record;
  }

  for (const later of ['a GET', 'a PATCH'] as const) {
    it(`keeps the saves that copy holds, for ${later} after it`, async () => {
      const { id, cookieValue, read } = await readThenSavedInRedis(core);
      // The GET moves the session to the database (counter 0), finds counter 1 left in Redis, and
      // asks the directory where the session is before it takes that copy: the database fails it.
      const failure = failNextDirectoryRead(core);
      let answer: string;
      try {
        answer = await answerOf(core.backends.migrate(read, 'database', 'flag', undefined, Date.now()));
      } finally {
        failure.restore();
      }
      // The browser's next request: with the cookie it had (answered 503), or the one the move set.
      const cookie = answer === '503' ? cookieValue : core.backends.cookieValue('database', id);
      const seen = await nextRequest(cookie, later === 'a PATCH' ? { theme: 'light' } : undefined);
      const expected = later === 'a PATCH' ? { counter: 1, theme: 'light' } : { counter: 1 };
      expect(seen.data.preferences, `counter 1 was answered 200 (the move answered ${answer})`).to.deep.equal(expected);
      const now = await core.backends.open(core.backends.cookieValue('database', id));
      expect(now?.data.preferences, 'and stays').to.deep.equal(expected);
    });
  }
});
