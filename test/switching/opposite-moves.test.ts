/**
 * Two instances that disagree about the flag (a rolling restart with a new SESSION_STORAGE, an
 * automatic rollback on one of them) can move one session in opposite directions at the same
 * moment: one request, with the cookie naming Redis, moves it into the database, while another,
 * with a cookie naming the database (a tab that had not yet seen the newer cookie), moves it into
 * Redis. Each move then removed the copy the other had just written, and the user was logged
 * out. The moves are ordered by the session's directory entry now: the session survives, with
 * both requests' changes, whichever cookie the browser ends up holding.
 *
 * Two instances here are two cores (the app's whole session layer) on one PostgreSQL database
 * and one Redis, driven below HTTP so that the two moves start together every time.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig, type BackendName } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('two instances moving one session in opposite directions at once', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let dir: string;
  let toDatabase: Core;
  let toRedis: Core;
  const prefix = `opposite-${randomBytes(4).toString('hex')}:`;
  let env: Record<string, string>;

  before(async () => {
    db = await createTestDatabase('switchboard_opposite');
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-opposite-'));
    // STORE_TIMEOUT_MS as the test apps have it (app-server.ts): a busy machine's late answer is not what this tests.
    env = { DATA_DIR: dir, DATABASE_URL: db.url, REDIS_KEY_PREFIX: prefix, SESSION_SECRETS: randomBytes(32).toString('base64url'), STORE_TIMEOUT_MS: '250' };
    toDatabase = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'database' }), pino({ level: 'silent' }));
    toRedis = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'redis' }), pino({ level: 'silent' }));
  });
  after(async () => {
    const redis = toRedis?.redis;
    const keys = redis ? await redis.keys(`${prefix}*`) : [];
    if (keys.length) await redis!.del(...keys);
    await toDatabase?.close();
    await toRedis?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request on `core`: opens the cookie, sets `key` to `value`, and moves the session to `target`, as the session middleware does. */
  async function request(core: Core, cookieValue: string, target: 'database' | 'redis', key: string, value: number): Promise<Written | undefined | 'logged out'> {
    const read = await core.backends.open(cookieValue);
    if (!read) return 'logged out';
    const changed: SessionRecord = { ...read, data: { ...read.data, [key]: value }, version: read.version + 1, lastActivity: Date.now() };
    return core.backends.migrate(changed, target, 'flag', { readVersion: read.version, changedKeys: new Set([key]) });
  }

  it('keeps the session and both changes, whichever response the browser takes last', async () => {
    const sessions = await Promise.all(Array.from({ length: 30 }, () => toRedis.backends.create(makeRecord({}, 'redis'), 'redis')));
    const problems: string[] = [];
    let retries = 0;
    for (let round = 1; round <= 6; round++) {
      await Promise.all(
        sessions.map(async (session, i) => {
          const id = session.record.id;
          // The session is in Redis; the cookie of a tab that has not seen that names the database.
          const [a, b] = await Promise.all([
            request(toDatabase, toRedis.backends.cookieValue('redis', id), 'database', 'fromA', round),
            request(toRedis, toRedis.backends.cookieValue('database', id), 'redis', 'fromB', round),
          ]);
          for (const [name, outcome] of [['A', a], ['B', b]] as const) {
            if (outcome === 'logged out') return problems.push(`session ${i}, round ${round}: logged out before request ${name}`);
            // Undefined: the request was told to retry (409), nothing written; its change may be missing.
            if (!outcome) {
              retries++;
              continue;
            }
            const opened = await toRedis.backends.open(outcome.cookieValue);
            if (!opened) problems.push(`session ${i}, round ${round}: the cookie of request ${name} (${outcome.record.backend}) opens nothing`);
            else if (opened.data.fromA !== round && a !== undefined) problems.push(`session ${i}, round ${round}: request A's change is lost (cookie of ${name})`);
            else if (opened.data.fromB !== round && b !== undefined) problems.push(`session ${i}, round ${round}: request B's change is lost (cookie of ${name})`);
          }
          // The next round starts from Redis again, as a session on a redis instance would be.
          const now = await toRedis.backends.open(toRedis.backends.cookieValue('redis', id)).then((r) => r ?? toRedis.backends.open(toRedis.backends.cookieValue('database', id)));
          if (now && now.backend !== 'redis') await toRedis.backends.migrate(now, 'redis');
        }),
      );
    }
    expect(problems).to.deep.equal([]);
    // Two movers: the one that finds the session changed reads it again and its second try wins.
    expect(retries, 'requests told to retry').to.equal(0);
  });

  /** A request as the session middleware writes it: saved where it is, or moved to `target` with its change. */
  async function write(core: Core, cookieValue: string, target: BackendName, key: string, value: unknown): Promise<Written | undefined> {
    const read = (await core.backends.open(cookieValue))!;
    const changed: SessionRecord = { ...read, data: { ...read.data, [key]: value }, version: read.version + 1, lastActivity: Date.now() };
    const concurrency = { readVersion: read.version, changedKeys: new Set([key]) };
    return read.backend === target ? core.backends.update(changed, 'save', concurrency) : core.backends.migrate(changed, target, 'flag', concurrency);
  }

  /** A save of `key` = `value` where the session was read, by a request that read `read` (as the session middleware saves). */
  function saveAsRead(core: Core, read: SessionRecord, key: string, value: unknown): Promise<Written | undefined> {
    const changed: SessionRecord = { ...read, data: { ...read.data, [key]: value }, version: read.version + 1, lastActivity: Date.now() };
    return core.backends.update(changed, 'save', { readVersion: read.version, changedKeys: new Set([key]) });
  }

  it('serves a cookie that names the database from Redis once the session has moved there, so the session stays one', async () => {
    const created = await toDatabase.backends.create(makeRecord({}, 'database'), 'database');
    const id = created.record.id;
    const stale = toRedis.backends.cookieValue('database', id);
    // The redis instance moves it to Redis; a tab that missed that still sends the database cookie.
    const moved = await toRedis.backends.migrate((await toRedis.backends.open(stale))!, 'redis');
    expect(moved?.record.backend).to.equal('redis');
    await write(toDatabase, stale, 'database', 'fromStaleTab', 1);
    await write(toRedis, toRedis.backends.cookieValue('redis', id), 'redis', 'fromRedisTab', 2);
    for (const cookie of [stale, toRedis.backends.cookieValue('redis', id)]) {
      const seen = (await toRedis.backends.open(cookie))?.data;
      expect(seen, cookie.slice(0, 2)).to.deep.include({ fromStaleTab: 1, fromRedisTab: 2 });
    }
  });

  it('moves a Redis copy that a save reached after the move read it, instead of leaving it to take changes apart', async () => {
    const created = await toRedis.backends.create(makeRecord({}, 'redis'), 'redis');
    const read = (await toDatabase.backends.open(created.cookieValue))!;
    // Another request saves in Redis after this one read the session, before it moves it.
    const redisStore = toRedis.raw.redis!;
    await redisStore.save({ ...read, data: { ...read.data, savedMeanwhile: true }, version: read.version + 1 }, read.version);
    const changed: SessionRecord = { ...read, data: { ...read.data, moving: true }, version: read.version + 1 };
    const written = await toDatabase.backends.migrate(changed, 'database', 'flag', { readVersion: read.version, changedKeys: new Set(['moving']) });
    expect(written?.record.backend).to.equal('database');
    expect(await redisStore.load(created.record.id), 'no Redis copy left to take changes').to.equal(undefined);
    expect((await toDatabase.backends.open(written!.cookieValue))?.data).to.deep.include({ savedMeanwhile: true, moving: true });
  });

  it('takes a Redis copy that saves keep reaching while the move evicts it, and keeps every change', async () => {
    const created = await toRedis.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { theme: 'dark' } } }, 'redis'), 'redis');
    const read = (await toDatabase.backends.open(created.cookieValue))!;
    const redisStore = toRedis.raw.redis!;
    const stores = toDatabase.backends.stores;
    const evict = stores.redis.evict.bind(stores.redis);
    // Before each of the first three evictions, one more request that had read the session in
    // Redis saves there (the flag flipped back for it): the first changes a preference.
    let landed = 0;
    stores.redis.evict = async (r) => {
      if (landed < 3) {
        const now = (await redisStore.load(created.record.id))!;
        landed++;
        const data = landed === 1 ? { ...now.data, preferences: { ...(now.data.preferences as object), lang: 'fr' } } : { ...now.data, [`savedMeanwhile${landed}`]: true };
        await redisStore.save({ ...now, data, version: now.version + 1 }, now.version);
      }
      return evict(r);
    };
    let written: Written | undefined;
    try {
      const patch = { fontSize: 14 };
      const changed: SessionRecord = { ...read, data: { ...read.data, moving: true, preferences: { ...(read.data.preferences as object), ...patch } }, version: read.version + 1 };
      written = await toDatabase.backends.migrate(changed, 'database', 'flag', { readVersion: read.version, changedKeys: new Set(['moving', 'preferences']), patches: new Map([['preferences', patch]]) });
    } finally {
      stores.redis.evict = evict;
    }
    expect(landed).to.equal(3);
    expect(written?.record.backend).to.equal('database');
    expect(await redisStore.load(created.record.id), 'no Redis copy left to take changes').to.equal(undefined);
    expect((await toDatabase.backends.open(written!.cookieValue))?.data).to.deep.include({
      moving: true,
      savedMeanwhile2: true,
      savedMeanwhile3: true,
      preferences: { theme: 'dark', lang: 'fr', fontSize: 14 },
    });
  });

  /**
   * A move out of Redis by `core` of `changed` (read as `read`), with its take of the copy left
   * in Redis held before it reads the directory (a slow database) while `meanwhile` runs.
   */
  async function moveWithTakeHeld(core: Core, read: SessionRecord, changed: SessionRecord, changedKey: string, meanwhile: () => Promise<void>): Promise<Written | undefined> {
    const directory = core.backends.directory;
    const loadByHash = directory.loadByHash.bind(directory);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const takeWaits = new Promise<void>((resolve) => (reached = resolve));
    let first = true;
    directory.loadByHash = async (idHash) => {
      if (first) {
        first = false;
        reached();
        await held;
      }
      return loadByHash(idHash);
    };
    const moving = core.backends.migrate(changed, 'database', 'flag', { readVersion: read.version, changedKeys: new Set([changedKey]) });
    try {
      await Promise.race([takeWaits, moving]);
      await meanwhile();
    } finally {
      release();
      await moving.catch(() => undefined);
      directory.loadByHash = loadByHash;
    }
    return moving;
  }

  /** A session in Redis, read by a request on the database instance, then saved in Redis by another (so the move's take has a copy to take). */
  async function readThenSavedInRedis() {
    const created = await toRedis.backends.create(makeRecord({}, 'redis'), 'redis');
    const read = (await toDatabase.backends.open(created.cookieValue))!;
    await toRedis.raw.redis!.save({ ...read, data: { ...read.data, k: 1 }, version: read.version + 1 }, read.version);
    return { id: created.record.id, read };
  }

  it('a take that finds its Redis copy already taken by another request carries nothing over: a later change stays', async () => {
    const { id, read } = await readThenSavedInRedis();
    const changed: SessionRecord = { ...read, data: { ...read.data, moving: true }, version: read.version + 1 };
    const written = await moveWithTakeHeld(toDatabase, read, changed, 'moving', async () => {
      // While the take waits, the session goes on: a request with the Redis cookie reads that copy
      // and moves it to the database itself (taking it out of Redis), and the user then changes `k`
      // again (200).
      expect((await write(toRedis, toRedis.backends.cookieValue('redis', id), 'database', 'other', 1))?.record.backend).to.equal('database');
      // (That move finds the entry a step ahead of the copy it read — another branch — and saves its
      // change there: the copy is left to the held take, not written over the database's branch.)
      expect((await write(toDatabase, toDatabase.backends.cookieValue('database', id), 'database', 'k', 2))?.record.backend).to.equal('database');
    });
    expect(written?.record.backend).to.equal('database');
    // The take's copy was gone (another request took it): what it held is in the session already,
    // and carried over again it wrote the older `k` over the change made since. The move's own
    // change, written over by that other move (at the same version), is put back.
    expect((await toDatabase.backends.open(toDatabase.backends.cookieValue('database', id)))?.data).to.deep.include({ moving: true, other: 1, k: 2 });
    expect(await toRedis.raw.redis!.load(id), 'no Redis copy left to take changes').to.equal(undefined);
  });

  it('a Redis copy that took saves while the session went on in the database is not taken for the session over the database\'s changes', async () => {
    // The session is in Redis; a request on the database instance reads it there (v) and moves it,
    // after another request saved in Redis (v+1, `k`): the move's take of that copy is held (a slow
    // directory read). Meanwhile the session goes on in two branches with the same version numbers.
    const { id, read } = await readThenSavedInRedis();
    const redisCookie = toRedis.backends.cookieValue('redis', id);
    const databaseCookie = toDatabase.backends.cookieValue('database', id);
    const changed: SessionRecord = { ...read, data: { ...read.data, moving: true }, version: read.version + 1 };
    let fromDatabaseTab: Written | undefined;
    let slowMove: Promise<Written | undefined> | undefined;
    await moveWithTakeHeld(toDatabase, read, changed, 'moving', async () => {
      // A request on the database instance that reads the Redis copy (v+1) and takes a while.
      const slow = (await toDatabase.backends.open(redisCookie))!;
      expect(slow.backend).to.equal('redis');
      // A tab that has the new cookie changes something in the database (v+1 → v+2): 200.
      fromDatabaseTab = await write(toDatabase, databaseCookie, 'database', 'fromDatabaseTab', 1);
      expect(fromDatabaseTab?.record.backend).to.equal('database');
      // A tab still on the Redis cookie, told to keep the session in Redis (the flag flipped back
      // for it), saves there twice (v+1 → v+3): 200 each. The database's entry names the database.
      for (const value of [1, 2]) expect((await write(toRedis, redisCookie, 'redis', 'fromRedisTab', value))?.record.backend).to.equal('redis');
      // The slow request now moves the session to the database. It read a copy the held move will
      // take (a save after that move read it), so it waits for that move, and then saves its change
      // where the session is, as it now is (SessionBackends.migrate).
      const slowChanged: SessionRecord = { ...slow, data: { ...slow.data, fromSlow: true }, version: slow.version + 1 };
      slowMove = toDatabase.backends.migrate(slowChanged, 'database', 'flag', { readVersion: slow.version, changedKeys: new Set(['fromSlow']) });
    });
    expect((await slowMove)?.record.backend).to.equal('database');
    const now = (await toDatabase.backends.open(databaseCookie))?.data;
    expect(now, 'the move\'s change').to.deep.include({ moving: true });
    expect(now, 'the slow request\'s change').to.deep.include({ fromSlow: true });
    expect(now, 'the Redis tab\'s changes').to.deep.include({ k: 1, fromRedisTab: 2 });
    expect(now, 'the change answered 200 in the database').to.deep.include({ fromDatabaseTab: 1 });
  });

  for (const later of ['database', 'redis'] as const) {
    it(`a take does not put the move's change back over a later one: a request that read it and set the key again (${later === 'database' ? 'saved in the database' : 'moving it back to Redis'}) keeps its value`, async () => {
      const { id, read } = await readThenSavedInRedis();
      const changed: SessionRecord = { ...read, data: { ...read.data, pref: 'A' }, version: read.version + 1 };
      await moveWithTakeHeld(toDatabase, read, changed, 'pref', async () => {
        const core = later === 'database' ? toDatabase : toRedis;
        const seen = (await core.backends.open(core.backends.cookieValue('database', id)))!;
        expect(seen.data.pref, "the later request reads the move's change").to.equal('A');
        expect((await write(core, core.backends.cookieValue('database', id), later, 'pref', 'B'))?.record.data.pref).to.equal('B');
      });
      const now = (await toRedis.backends.open(toRedis.backends.cookieValue(later, id)))!;
      expect(now.data.pref, 'answered 200 last, after reading A').to.equal('B');
    });
  }

  for (const from of ['redis', 'cookie'] as const) {
    it(`a save into ${from} by a request that read the session there before a move took it out follows the session, rather than answering 409 or writing where nothing reads it`, async () => {
      const created = await toDatabase.backends.create(makeRecord({}, from), from);
      // A request reads the session…
      const read = (await toDatabase.backends.open(created.cookieValue))!;
      // …while another, told the flag now says database, moves it there.
      const moved = await write(toDatabase, created.cookieValue, 'database', 'fromMover', 1);
      expect(moved?.record.backend).to.equal('database');
      if (from === 'redis') expect(await toRedis.raw.redis!.load(created.record.id), 'its Redis copy removed').to.equal(undefined);
      // Then the first, told to keep it where it was (the flag flipped back), saves its change there.
      const saved = await saveAsRead(toDatabase, read, 'fromLateSave', 2);
      expect(saved?.record.backend, 'saved where the session is').to.equal('database');
      expect((await toDatabase.backends.open(moved!.cookieValue))?.data).to.deep.include({ fromMover: 1, fromLateSave: 2 });
    });
  }

  it('a move out of the cookie carries what another request sealed into the cookie after the move read it', async () => {
    const created = await toDatabase.backends.create(makeRecord({}, 'cookie'), 'cookie');
    const read = (await toDatabase.backends.open(created.cookieValue))!;
    // Another request of the session, told to keep it in the cookie, saves its change first…
    expect((await saveAsRead(toDatabase, read, 'fromCookieTab', 1))?.record.backend).to.equal('cookie');
    // …then the first, which read it before, moves it to the database.
    const changed: SessionRecord = { ...read, data: { ...read.data, moving: true }, version: read.version + 1 };
    const moved = await toDatabase.backends.migrate(changed, 'database', 'flag', { readVersion: read.version, changedKeys: new Set(['moving']) });
    expect(moved?.record.backend).to.equal('database');
    expect((await toDatabase.backends.open(moved!.cookieValue))?.data).to.deep.include({ fromCookieTab: 1, moving: true });
  });

  it('a tab whose cookie still names the database, moving the session into the cookie again, keeps the newer seal made since', async () => {
    // Database copies written behind late enough that the stale tab reads the one before the save.
    const core = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'cookie', MIRROR_FLUSH_MS: '10000' }), pino({ level: 'silent' }));
    try {
      const created = await core.backends.create(makeRecord({}, 'database'), 'database');
      const staleCookie = created.cookieValue;
      const movedIn = await write(core, staleCookie, 'cookie', 'fromMover', 1);
      expect(movedIn?.record.backend).to.equal('cookie');
      // A tab with the new cookie saves in the cookie…
      expect((await saveAsRead(core, (await core.backends.open(movedIn!.cookieValue))!, 'fromCookieTab', 2))?.record.backend).to.equal('cookie');
      // …and one that still sends the database cookie moves the session into the cookie again.
      const again = await write(core, staleCookie, 'cookie', 'fromStaleTab', 3);
      expect((await core.backends.open(again!.cookieValue))?.data).to.deep.include({ fromMover: 1, fromCookieTab: 2, fromStaleTab: 3 });
    } finally {
      await core.close();
    }
  });

  it('a save that finds the session moved since it read it follows the session, rather than writing where nothing reads it', async () => {
    const created = await toDatabase.backends.create(makeRecord({}, 'database'), 'database');
    const cookie = created.cookieValue;
    // A request on the database instance reads the session…
    const read = (await toDatabase.backends.open(cookie))!;
    // …while a tab's request through the redis instance moves it into Redis.
    const moved = await write(toRedis, cookie, 'redis', 'fromRedisTab', 1);
    expect(moved?.record.backend).to.equal('redis');
    // Then the first request saves its change.
    const saved = await saveAsRead(toDatabase, read, 'fromDatabaseTab', 2);
    expect(saved?.record.backend, 'saved where the session is').to.equal('redis');
    expect(saved?.cookieValue, 'and the browser is pointed there').to.equal(moved!.cookieValue);
    expect((await toRedis.backends.open(moved!.cookieValue))?.data).to.deep.include({ fromRedisTab: 1, fromDatabaseTab: 2 });
  });
});
