/**
 * A save that fails over from Redis to the database follows the session where it has moved since
 * the request read it, rather than write over its directory entry. (Found with bench:flips on a
 * loaded machine: a PATCH that had read the session in Redis timed out there, after another
 * request had moved the session into a sealed cookie; its save on the fallback merged onto the
 * directory entry, wrote it as the database's, and answered 200. The entry and the seal then went
 * on as two sessions, and the first move of either lost the other's changes for good.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore } from './redis-move-core.js';

describe('a save failing over from Redis after its session moved into the cookie', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('fallback-follows');
  let core: Core;
  before(() => {
    core = opened();
  });

  it('follows the session into the cookie, where the move put it', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'redis'), 'redis');
    // Two PATCHes read the session in Redis; the first, told cookie, moves it there.
    const [first, second] = [(await core.backends.open(created.cookieValue))!, (await core.backends.open(created.cookieValue))!];
    const one = patched(first, { w1: 1 });
    const moved = (await core.backends.migrate(one.changed, 'cookie', 'flag', one.concurrency))!;
    expect(moved.record.backend).to.equal('cookie');
    // The second, told Redis, saves there, and Redis times out (a saturated host).
    const redis = core.backends.stores.redis;
    const save = redis.save;
    redis.save = () => Promise.reject(new BackendUnavailableError('redis', 'timeout'));
    let saved;
    try {
      const two = patched(second, { w2: 2 });
      saved = await core.backends.update(two.changed, 'save', two.concurrency);
    } finally {
      redis.save = save;
    }
    expect(saved?.record.backend, 'saved where the session is').to.equal('cookie');
    expect(saved?.fellBackFrom, 'no fallback: the session is not in Redis').to.equal(undefined);
    expect(saved!.record.data.preferences).to.deep.equal({ w0: 0, w1: 1, w2: 2 });
    // The browser may keep the move's cookie (answered last): it reads both changes.
    const read = await core.backends.open(moved.cookieValue);
    expect(read!.data.preferences).to.deep.equal({ w0: 0, w1: 1, w2: 2 });
    // And the directory still names the cookie: a later move reads the session there.
    expect((await core.backends.directory.loadByHash(created.record.idHash))?.backend).to.equal('cookie');
  });
});
