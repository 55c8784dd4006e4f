/**
 * A move into Redis writes the session's directory entry first (it orders moves), then Redis
 * (MirroredStore.moveIn). In between, a request whose cookie still names Redis (a tab that missed
 * the moves out and back) misses there and reads through to the entry: the database copy, at the
 * version the move is writing into Redis. Its change, saved where the flag then said (the
 * database), went into that entry, and the move's Redis write landed beside it: two copies, each
 * taking changes answered 200, until a move of one wrote over the other. (bench:flips: the
 * session saved on that copy at the move's version, and the Redis copy's next save reached the
 * same version, which a move out of Redis then wrote over it.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { answeredOrWaiting, redisMoveCore } from './redis-move-core.js';

describe('a read through to the directory entry while a move into Redis is on its way', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('read-through-move-in');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** Holds the next move's write into Redis itself (its directory entry written) until released. */
  function holdRedisMoveIn() {
    const primary = (core.backends.stores.redis as unknown as MirroredStore).primary;
    const moveIn = primary.moveIn.bind(primary);
    let held: () => void = () => {};
    const released = new Promise<void>((resolve) => (held = resolve));
    const reached = new Promise<void>((resolve) => {
      primary.moveIn = async (r, readVersion) => {
        primary.moveIn = moveIn;
        resolve();
        await released;
        return moveIn(r, readVersion);
      };
    });
    return { reached, release: () => held(), restore: () => ((primary.moveIn = moveIn), held()) };
  }

  /** What SessionWriter does with a changed session and the flag saying `target`. */
  function written(changed: SessionRecord, concurrency: ReturnType<typeof patched>['concurrency'], target: 'database' | 'redis') {
    return changed.backend === target ? core.backends.update(changed, 'save', concurrency) : core.backends.migrate(changed, target, 'flag', concurrency, Date.now());
  }

  /** A session in Redis at counter 0 (a tab keeps its cookie), moved out to the database by another tab. */
  async function movedOutOfRedis() {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'redis'), 'redis');
    const inRedis = (await core.backends.open(created.cookieValue))!;
    const out = (await core.backends.migrate(inRedis, 'database', 'flag', undefined, Date.now()))!;
    expect(out.record.backend).to.equal('database');
    return { id: created.record.id, inRedis: created.cookieValue, inDatabase: out.cookieValue };
  }

  /** Whichever cookie the browser keeps (the move's, naming Redis, or the PATCH's), the session has the PATCH's change, and keeps it past the next move. */
  async function keptCounter1(id: string, change: Written | undefined) {
    expect(change, 'the PATCH answered 200').to.not.equal(undefined);
    const viaMoveIn = (await core.backends.open(core.backends.cookieValue('redis', id)))!;
    expect(viaMoveIn.data.preferences, 'read with the cookie naming Redis').to.deep.equal({ counter: 1 });
    const viaPatch = (await core.backends.open(change!.cookieValue))!;
    expect(viaPatch.data.preferences, "read with the PATCH's cookie").to.deep.equal({ counter: 1 });
    // The next move out of Redis, made from the Redis cookie with another change.
    const last = patched(viaMoveIn, { theme: 'dark' });
    const moved = (await written(last.changed, last.concurrency, 'database'))!;
    const final = (await core.backends.open(moved.cookieValue))!;
    expect(final.data.preferences, 'after the next move').to.deep.equal({ counter: 1, theme: 'dark' });
  }

  for (const named of ['redis', 'database'] as const) {
    it(`keeps the change of a request whose cookie names ${named}, read before Redis has the session`, async () => {
      const { id, inRedis, inDatabase } = await movedOutOfRedis();
      // The flag says redis: a GET with the database cookie moves the session back, held once its
      // directory entry names Redis, before Redis has it.
      const hold = holdRedisMoveIn();
      let change: Written | undefined;
      try {
        const read = (await core.backends.open(inDatabase))!;
        const moveIn = core.backends.migrate(read, 'redis', 'flag', undefined, Date.now());
        await hold.reached;
        // Another tab sends its PATCH with the cookie it holds (naming Redis: a miss there reads
        // through to the entry); the flag says database for it.
        const opening = core.backends.open(named === 'redis' ? inRedis : inDatabase);
        await answeredOrWaiting(opening);
        hold.release();
        const next = patched((await opening)!, { counter: 1 });
        change = await written(next.changed, next.concurrency, 'database');
        await moveIn;
      } finally {
        hold.restore();
      }
      await keptCounter1(id, change);
    });
  }

  it('keeps the change of a request whose Redis cookie missed before the move and read the entry after it', async () => {
    const { id, inRedis, inDatabase } = await movedOutOfRedis();
    // The PATCH with the Redis cookie misses there; its read of the entry is held.
    const directory = core.backends.directory;
    const load = directory.load;
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const reached = new Promise<void>((resolve) => {
      directory.load = async (token) => {
        directory.load = load;
        resolve();
        await released;
        return load.call(directory, token);
      };
    });
    let change: Written | undefined;
    try {
      const opening = core.backends.open(inRedis);
      await reached;
      // Meanwhile the GET with the database cookie moves the session back into Redis, all of it.
      const read = (await core.backends.open(inDatabase))!;
      expect((await core.backends.migrate(read, 'redis', 'flag', undefined, Date.now()))?.record.backend).to.equal('redis');
      release();
      const next = patched((await opening)!, { counter: 1 });
      change = await written(next.changed, next.concurrency, 'database');
    } finally {
      directory.load = load;
      release();
    }
    await keptCounter1(id, change);
  });
});
