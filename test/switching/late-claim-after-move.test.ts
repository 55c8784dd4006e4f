/**
 * A save written to the database by a request whose cookie named another backend (a tab that
 * missed a flip) claims the row for the database once it has answered (SessionBackends.adopt).
 * Meanwhile another request moved the session into Redis. The claim, late, named the database
 * holder of a row whose session Redis held: saves through a database cookie went on in the
 * database while saves through a Redis cookie went on in Redis, two copies at the same versions,
 * and the next move into Redis wrote one over the other — changes answered 200 were gone.
 * (Traced with the flip harness: 8 users, 5 writers and a reader each, the flag flipping every
 * 100–150 ms.)
 */
import { expect } from 'chai';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisMoveCore } from './redis-move-core.js';

describe('a late claim of a database save, after a move into redis', function () {
  this.timeout(60_000);
  const core = redisMoveCore('late-claim-after-move');

  it('leaves the directory naming redis, where the session went', async () => {
    const { backends } = core();
    const created = await backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }), 'database');
    const read = (await backends.open(created.cookieValue))!;
    const one = patched(read, { counter: 1 });
    const saved = (await backends.update(one.changed, 'save', one.concurrency))!;
    expect(saved.record.backend).to.equal('database');
    // Before that request claims the row, another moves the session into Redis.
    const moved = (await backends.migrate(saved.record, 'redis'))!;
    expect(moved.record.backend).to.equal('redis');
    await backends.adopt(saved.record);
    const entry = await backends.directory.loadByHash(saved.record.idHash);
    expect(entry?.backend, 'the directory still names the holder the move wrote').to.equal('redis');
    // A tab with the database's cookie is served from Redis, and its change goes there.
    const again = (await backends.open(created.cookieValue))!;
    expect(again.backend).to.equal('redis');
    const two = patched(again, { counter: 2 });
    expect((await backends.update(two.changed, 'save', two.concurrency))?.record.backend).to.equal('redis');
    const inRedis = await backends.stores.redis.load(created.record.id);
    expect(inRedis?.data.preferences).to.deep.equal({ counter: 2 });
  });
});
