/**
 * A save on Redis that misses Redis's deadline and lands all the same, whose fallback's database
 * write follows the session to where a move put it (`saveOnFallback`, "followed where the session
 * went"). Its landed Redis copy must be taken as after any failed-over Redis write
 * (`takeLandedLater`): left there, a tab's request sent with the cookie naming Redis was served
 * it and saved on it, answered 200, while the session went on elsewhere.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { patched } from './lagging-cookie-core.js';
import { redisCopyLeft } from './redis-copy-left.js';
import { redisMoveCore } from './redis-move-core.js';

describe("a failed-over Redis save that landed, whose fallback follows its session where a move put it", function () {
  this.timeout(60_000);
  const opened = redisMoveCore('landed-follows');
  let core: Core;
  before(() => {
    core = opened();
  });
  const { written, inRedis, tabThenEveryCookieReads } = redisCopyLeft(() => core);

  const redisGuard = () => (core.backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;

  /**
   * The next Redis save lands, and is answered only once Redis's deadline has made the request
   * give up on it; the fallback's first step (its read of the database copy) then waits until
   * `release`d, so that the test can move the session meanwhile.
   */
  function landsThenFallbackHeld() {
    const guard = redisGuard();
    const inner = guard.inner as SessionStore & Record<'save', (...args: unknown[]) => Promise<string | undefined>>;
    const guarded = guard as unknown as Record<'save', (...args: unknown[]) => Promise<string | undefined>>;
    const [original, outer] = [inner.save, guarded.save];
    let gaveUp: () => void = () => {};
    const givenUp = new Promise<void>((resolve) => (gaveUp = resolve));
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    let heldNow: () => void = () => {};
    const fallbackHeld = new Promise<void>((resolve) => (heldNow = resolve));
    inner.save = async (...args: unknown[]) => {
      inner.save = original;
      const token = await original.apply(inner, args);
      await givenUp;
      return token;
    };
    guarded.save = (...args: unknown[]) => {
      guarded.save = outer;
      const answer = outer.apply(guard, args);
      answer.catch(() => {
        const database = core.backends.stores.database;
        const load = database.load;
        database.load = async (token: string) => {
          database.load = load;
          heldNow();
          await released;
          return load.call(database, token);
        };
        gaveUp();
      });
      return answer;
    };
    return { fallbackHeld, release: () => release() };
  }

  /** The next read of Redis fails at its deadline (a saturated host): the session is served from its database copy. */
  function nextRedisReadTimesOut() {
    const guard = redisGuard() as unknown as { load(token: string): Promise<SessionRecord | undefined> };
    const load = guard.load;
    guard.load = () => {
      guard.load = load;
      return Promise.reject(new BackendUnavailableError('redis', 'timeout'));
    };
  }

  /** B's read of Redis times out: served the database copy, it saves b: 1 there, and its cookie is pointed at it. */
  async function bSavesOnDatabaseCopy(cookieValue: string): Promise<Written> {
    nextRedisReadTimesOut();
    const readB = (await core.backends.open(cookieValue))!;
    expect(readB.backend).to.equal('database');
    const b = patched(readB, { b: 1 });
    const saved = (await core.backends.update(b.changed, 'save', b.concurrency))!;
    await core.backends.adopt(saved.record);
    return saved;
  }

  /**
   * A's save (a: 1), told Redis, lands there past the deadline and fails over; `meanwhile` moves
   * the session before the fallback reads the database copy. A's fallback then follows (or not).
   */
  async function failedOverAround(read: SessionRecord, meanwhile: () => Promise<Written | undefined>) {
    const one = patched(read, { a: 1 });
    const held = landsThenFallbackHeld();
    const saving = core.backends.update(one.changed, 'save', one.concurrency);
    await held.fallbackHeld;
    const moved = await meanwhile();
    held.release();
    const saved = (await saving)!;
    return { saved, moved };
  }

  for (const to of ['cookie', 'database'] as const) {
    it(`a concurrent move out of Redis into the ${to} (read in Redis) takes the landed copy`, async () => {
      const created = await inRedis();
      const [readA, readM] = [(await core.backends.open(created.cookieValue))!, (await core.backends.open(created.cookieValue))!];
      const { saved, moved } = await failedOverAround(readA, () => {
        const m = patched(readM, { m: 1 });
        return written(m.changed, m.concurrency, to);
      });
      expect(moved!.record.backend).to.equal(to);
      expect(saved.record.backend, 'the fallback followed where the move put it').to.equal(to);
      expect(saved.fellBackFrom).to.equal(to === 'cookie' ? undefined : 'redis');
      await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the move', moved!.cookieValue], ['the failed-over save', saved.cookieValue]], { w0: 0, a: 1, m: 1 });
    });
  }

  for (const told of ['redis', 'cookie'] as const) {
    it(`a move into the cookie of the database copy (its Redis read timed out) leaves nothing live in Redis (tab told ${told})`, async () => {
      const created = await inRedis();
      const readA = (await core.backends.open(created.cookieValue))!;
      const { saved, moved } = await failedOverAround(readA, async () => {
        nextRedisReadTimesOut();
        const readM = (await core.backends.open(created.cookieValue))!;
        expect(readM.backend, 'served from the database copy').to.equal('database');
        const m = patched(readM, { m: 1 });
        return written(m.changed, m.concurrency, 'cookie');
      });
      expect(moved!.record.backend).to.equal('cookie');
      expect(saved.record.backend, 'the fallback followed where the move put it').to.equal('cookie');
      expect(saved.fellBackFrom).to.equal(undefined);
      await tabThenEveryCookieReads(created.cookieValue, told, [['the move', moved!.cookieValue], ['the failed-over save', saved.cookieValue]], { w0: 0, a: 1, m: 1 });
    });
  }

  it('the take carries over only what was saved on the landed copy: a save on the database copy meanwhile (no follow) stays', async () => {
    const created = await inRedis();
    const readA = (await core.backends.open(created.cookieValue))!;
    let bSaved: Written | undefined;
    const { saved } = await failedOverAround(readA, async () => {
      bSaved = await bSavesOnDatabaseCopy(created.cookieValue);
      return bSaved;
    });
    expect(saved.record.backend).to.equal('database');
    expect(saved.fellBackFrom).to.equal('redis');
    expect(saved.record.data.preferences).to.deep.equal({ w0: 0, b: 1, a: 1 });
    await tabThenEveryCookieReads(created.cookieValue, 'redis', [['B', bSaved!.cookieValue], ['the failed-over save', saved.cookieValue]], { w0: 0, a: 1, b: 1 });
  });

  it('the take, made once the session is back in Redis and changed again there, puts no older change back', async () => {
    const created = await inRedis();
    const readA = (await core.backends.open(created.cookieValue))!;
    const { saved } = await failedOverAround(readA, async () => undefined);
    expect(saved.record.backend).to.equal('database');
    const untaken = (core.backends as unknown as { untaken: Map<string, unknown> }).untaken;
    const pending = untaken.get(readA.idHash);
    expect(pending, 'a take remembered').to.not.equal(undefined);
    // Moved back and changed by another instance, which knows no take and opens nothing here.
    untaken.delete(readA.idHash);
    try {
      const atDb = (await core.backends.stores.database.load(created.record.id))!;
      const k = patched(atDb, { k: 1 });
      const back = (await core.backends.migrate(k.changed, 'redis', 'flag', k.concurrency, Date.now()))!;
      expect(back.record.backend).to.equal('redis');
      const inR = (await core.backends.stores.redis.load(created.record.id))!;
      const five = patched(inR, { a: 5 });
      expect((await core.backends.update(five.changed, 'save', five.concurrency))?.record.backend).to.equal('redis');
    } finally {
      untaken.set(readA.idHash, pending);
    }
    const now = (await core.backends.open(created.cookieValue))!;
    expect(now.data.preferences).to.deep.equal({ w0: 0, a: 5, k: 1 });
    const again = (await core.backends.open(created.cookieValue))!;
    expect(again.data.preferences).to.deep.equal({ w0: 0, a: 5, k: 1 });
  });

  it('a move out of Redis refused by the directory entry (a save on the database copy first) leaves nothing live in Redis', async () => {
    const created = await inRedis();
    const [readA, readM] = [(await core.backends.open(created.cookieValue))!, (await core.backends.open(created.cookieValue))!];
    let bSaved: Written | undefined;
    const { saved, moved } = await failedOverAround(readA, async () => {
      // B's read of Redis times out: served the database copy, it saves there (the flag says Redis, its breaker lets it through: SessionWriter saves where it read).
      bSaved = await bSavesOnDatabaseCopy(created.cookieValue);
      // M, which read the session in Redis, moves it into the cookie: refused by the entry, it goes on from the database.
      const m = patched(readM, { m: 1 });
      return written(m.changed, m.concurrency, 'cookie');
    });
    expect(moved!.record.backend).to.equal('cookie');
    expect(saved.record.backend).to.equal('cookie');
    await tabThenEveryCookieReads(created.cookieValue, 'redis', [['B', bSaved!.cookieValue], ['the move', moved!.cookieValue], ['the failed-over save', saved.cookieValue]], { w0: 0, a: 1, b: 1, m: 1 });
  });

  it('the session moved back into Redis after the fallback followed it into the cookie keeps every change', async () => {
    const created = await inRedis();
    const readA = (await core.backends.open(created.cookieValue))!;
    const { saved, moved } = await failedOverAround(readA, async () => {
      nextRedisReadTimesOut();
      const readM = (await core.backends.open(created.cookieValue))!;
      const m = patched(readM, { m: 1 });
      return written(m.changed, m.concurrency, 'cookie');
    });
    expect(saved.record.backend).to.equal('cookie');
    // Told Redis again: a request with the failed-over save's cookie (the last answer) moves it back.
    const readBack = (await core.backends.open(saved.cookieValue))!;
    const k = patched(readBack, { k: 1 });
    const back = (await written(k.changed, k.concurrency, 'redis'))!;
    await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the move', moved!.cookieValue], ['the failed-over save', saved.cookieValue], ['the move back', back.cookieValue]], { w0: 0, a: 1, m: 1, k: 1 });
  });
});
