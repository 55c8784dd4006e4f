/**
 * A session whose Redis read fails (its deadline, an error: not an open breaker) is served its
 * database copy (backends.open). That request then moves it (the flag says cookie), saves it on
 * the database, or only points its cookie at the copy (SessionWriter: `adopt`): the session has
 * left Redis, and nothing evicts the Redis copy at the version read. A tab's request sent with the
 * cookie naming Redis (before the browser had that answer) was served that copy once Redis
 * answered, and saved on it, answered 200, while the session went on elsewhere without it. So that
 * copy is taken at the session's next open on this instance, as after a failed-over Redis write
 * (`takeLandedLater`) — the next open after that request wrote: one in between (a tab whose Redis
 * read succeeded) made the take while the session was still in Redis, and it was spent.
 */
import { expect } from 'chai';
import { rmSync } from 'node:fs';
import type { Switchboard } from '../../src/app.js';
import type { BackendName } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/config.js';
import type { Core } from '../../src/core.js';
import type { SessionBackends } from '../../src/sessions/backends.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { MirroredStore } from '../../src/sessions/mirrored-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { redisEnv } from '../http/helpers.js';
import { makeScratchDir } from '../support/child-process.js';
import { Client } from '../support/http-client.js';
import { sendWithCookie, serveInProcess, type InProcessApp } from '../support/in-process-app.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { redisCommand } from '../support/redis-server.js';
import { patched } from './lagging-cookie-core.js';
import { redisCopyLeft } from './redis-copy-left.js';
import { redisMoveCore } from './redis-move-core.js';

const redisGuard = (backends: SessionBackends) => (backends.stores.redis as unknown as MirroredStore).primary as GuardedStore;

/**
 * The next Redis read is answered by Redis only once its guard has given up on it (a saturated
 * host): the request is served the session's database copy, and Redis answers no one.
 */
function nextRedisReadTimesOut(backends: SessionBackends) {
  const guard = redisGuard(backends);
  const inner = guard.inner as SessionStore & Record<'load', (token: string) => Promise<SessionRecord | undefined>>;
  const guarded = guard as unknown as Record<'load', (token: string) => Promise<SessionRecord | undefined>>;
  const [original, outer] = [inner.load, guarded.load];
  let gaveUp: () => void = () => {};
  const givenUp = new Promise<void>((resolve) => (gaveUp = resolve));
  inner.load = async (token: string) => {
    inner.load = original;
    const record = await original.call(inner, token);
    await givenUp;
    return record;
  };
  guarded.load = (token: string) => {
    guarded.load = outer;
    const answer = outer.call(guard, token);
    answer.catch(() => gaveUp());
    return answer;
  };
}

describe('a session served its database copy after its Redis read failed, then written elsewhere', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('redis-read-failed');
  let core: Core;
  before(() => {
    core = opened();
  });
  const { written, inRedis, tabThenEveryCookieReads, everyCookieReads } = redisCopyLeft(() => core);

  const untaken = () => (core.backends as unknown as { untaken: Map<string, { retry: () => Promise<unknown>; until: number }> }).untaken;

  /** The next Redis read fails as through an open breaker (nothing sent to Redis). */
  function nextRedisReadRefused() {
    const guard = redisGuard(core.backends) as unknown as { load(token: string): Promise<SessionRecord | undefined> };
    const load = guard.load;
    guard.load = () => {
      guard.load = load;
      return Promise.reject(new BackendUnavailableError('redis', 'circuit_open'));
    };
  }

  /** M's read of Redis times out: served the database copy. */
  async function readFailed(cookieValue: string) {
    nextRedisReadTimesOut(core.backends);
    const readM = (await core.backends.open(cookieValue))!;
    expect(readM.backend, 'served from the database copy').to.equal('database');
    return readM;
  }

  for (const told of ['redis', 'cookie'] as const) {
    it(`moved into the cookie: a tab's save on the Redis copy is not lost (tab told ${told})`, async () => {
      const created = await inRedis();
      const readM = await readFailed(created.cookieValue);
      const m = patched(readM, { m: 1 });
      const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
      expect(moved.record.backend).to.equal('cookie');
      await tabThenEveryCookieReads(created.cookieValue, told, [['the move', moved.cookieValue]], { w0: 0, m: 1 });
    });
  }

  it("saved on the database copy (its cookie pointed there): a tab's save on the Redis copy is not lost", async () => {
    const created = await inRedis();
    const readM = await readFailed(created.cookieValue);
    const m = patched(readM, { m: 1 });
    const saved = (await written(m.changed, m.concurrency, 'database'))!;
    expect(saved.record.backend).to.equal('database');
    await core.backends.adopt(saved.record);
    await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the save', saved.cookieValue]], { w0: 0, m: 1 });
  });

  it("only read (its cookie pointed at the database copy): a tab's save on the Redis copy is not lost", async () => {
    const created = await inRedis();
    const readM = await readFailed(created.cookieValue);
    await core.backends.adopt(readM);
    const kept = core.backends.cookieValue('database', readM.id);
    await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the read', kept]], { w0: 0 });
  });

  it("the request's own open does not spend the take before it wrote (another session's take pending on the instance)", async () => {
    const created = await inRedis();
    const other = { retry: async () => undefined, until: Date.now() + 60_000 };
    untaken().set('another-session', other);
    try {
      const readM = await readFailed(created.cookieValue);
      const m = patched(readM, { m: 1 });
      const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
      await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the move', moved.cookieValue]], { w0: 0, m: 1 });
    } finally {
      untaken().delete('another-session');
    }
  });

  it("a tab that read the Redis copy before M's read failed saves on it after M's move: not lost", async () => {
    const created = await inRedis();
    const tab = (await core.backends.open(created.cookieValue))!;
    expect(tab.backend).to.equal('redis');
    const readM = await readFailed(created.cookieValue);
    const m = patched(readM, { m: 1 });
    const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
    const two = patched(tab, { t: 2 });
    const third = (await written(two.changed, two.concurrency, 'redis'))!;
    expect(third.record.backend, 'saved on the Redis copy, answered').to.equal('redis');
    for (const [which, cookieValue] of [['the move', moved.cookieValue], ["the tab's request", third.cookieValue]] as const) {
      const now = (await core.backends.open(cookieValue))!;
      expect(now.data.preferences, `read with the cookie of ${which}`).to.deep.equal({ w0: 0, m: 1, t: 2 });
    }
  });

  /**
   * Another request of the session opens it between M's failed read and M's write (a tab whose
   * Redis read succeeds): served the Redis copy, the session has not left Redis yet, and a take
   * made at that open would find the directory entry still naming Redis, leave the copy, and be
   * spent before M wrote the session elsewhere.
   */
  async function openedMeanwhile(cookieValue: string) {
    const meanwhile = (await core.backends.open(cookieValue))!;
    expect(meanwhile.backend, 'the other request served from Redis').to.equal('redis');
    return meanwhile;
  }

  describe('another request opens the session from Redis before M writes', () => {
    it("M moves it into the cookie: a tab's save on the Redis copy after that is not lost", async () => {
      const created = await inRedis();
      const readM = await readFailed(created.cookieValue);
      await openedMeanwhile(created.cookieValue);
      const m = patched(readM, { m: 1 });
      const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
      expect(moved.record.backend).to.equal('cookie');
      await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the move', moved.cookieValue]], { w0: 0, m: 1 });
    });

    it("M saves it on the database copy: a tab's save on the Redis copy after that is not lost", async () => {
      const created = await inRedis();
      const readM = await readFailed(created.cookieValue);
      await openedMeanwhile(created.cookieValue);
      const m = patched(readM, { m: 1 });
      const saved = (await written(m.changed, m.concurrency, 'database'))!;
      expect(saved.record.backend).to.equal('database');
      await core.backends.adopt(saved.record);
      await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the save', saved.cookieValue]], { w0: 0, m: 1 });
    });

    it("M only reads it (its cookie pointed at the database copy): a tab's save on the Redis copy after that is not lost", async () => {
      const created = await inRedis();
      const readM = await readFailed(created.cookieValue);
      await openedMeanwhile(created.cookieValue);
      await core.backends.adopt(readM);
      await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the read', core.backends.cookieValue('database', readM.id)]], { w0: 0 });
    });

    it("M touches it, then points its cookie at the copy, opened again in between: a tab's save on the Redis copy after that is not lost", async () => {
      const created = await inRedis();
      const readM = await readFailed(created.cookieValue);
      await openedMeanwhile(created.cookieValue);
      // A touch leaves the directory entry naming Redis: only the claim that follows takes the session out.
      const touched = (await core.backends.update({ ...readM, lastActivity: Date.now() }, 'touch'))!;
      await openedMeanwhile(created.cookieValue);
      await core.backends.adopt(touched.record);
      await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the touch', touched.cookieValue]], { w0: 0 });
    });

    for (const tabFirst of [false, true]) {
      it(`M told Redis (its write puts the copy back there)${tabFirst ? ", after that request's save on the Redis copy" : ''}: every change read with every cookie`, async () => {
        const created = await inRedis();
        const readM = await readFailed(created.cookieValue);
        const tab = await openedMeanwhile(created.cookieValue);
        const two = patched(tab, { t: 2 });
        const saveTab = () => written(two.changed, two.concurrency, 'redis');
        const first = tabFirst ? (await saveTab())! : undefined;
        const m = patched(readM, { m: 1 });
        const mine = (await written(m.changed, m.concurrency, 'redis'))!;
        expect(mine, "M's write answered").to.not.equal(undefined);
        const third = first ?? (await saveTab())!;
        expect(third, "the tab's save answered").to.not.equal(undefined);
        await everyCookieReads([['M', mine.cookieValue], ["the tab's request", third.cookieValue], ['a request sent with the cookie naming Redis', created.cookieValue]], { w0: 0, m: 1, t: 2 });
      });
    }

    it("that request saves on the Redis copy it was served, after M's move: not lost", async () => {
      const created = await inRedis();
      const readM = await readFailed(created.cookieValue);
      const tab = await openedMeanwhile(created.cookieValue);
      const m = patched(readM, { m: 1 });
      const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
      const two = patched(tab, { t: 2 });
      const third = (await written(two.changed, two.concurrency, 'redis'))!;
      expect(third, "the tab's save answered").to.not.equal(undefined);
      await everyCookieReads([['the move', moved.cookieValue], ["the tab's request", third.cookieValue], ['a request sent with the cookie naming Redis', created.cookieValue]], { w0: 0, m: 1, t: 2 });
    });
  });

  it('nothing saved on the Redis copy since: the take evicts it and writes nothing', async () => {
    const created = await inRedis();
    const readM = await readFailed(created.cookieValue);
    const m = patched(readM, { m: 1 });
    const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
    const before = (await core.backends.open(moved.cookieValue))!;
    expect(untaken().has(readM.idHash), 'the take made at that open').to.equal(false);
    expect(await core.backends.stores.redis.loadHeld!(created.record.id), 'the Redis copy').to.equal(undefined);
    expect(before.data.preferences).to.deep.equal({ w0: 0, m: 1 });
    const after = (await core.backends.open(moved.cookieValue))!;
    expect(after.version).to.equal(before.version);
    expect(after.data.preferences).to.deep.equal({ w0: 0, m: 1 });
  });

  it('the session never left Redis (nothing written): the take leaves the Redis copy, and a save on it stays', async () => {
    const created = await inRedis();
    await readFailed(created.cookieValue);
    const tab = (await core.backends.open(created.cookieValue))!;
    expect(tab.backend).to.equal('redis');
    const two = patched(tab, { t: 2 });
    expect((await written(two.changed, two.concurrency, 'redis'))?.record.backend).to.equal('redis');
    const held = (await core.backends.stores.redis.loadHeld!(created.record.id))!;
    expect(held.data.preferences).to.deep.equal({ w0: 0, t: 2 });
    expect((await core.backends.open(created.cookieValue))!.data.preferences).to.deep.equal({ w0: 0, t: 2 });
  });

  it('while Redis does not answer for the session (its breaker, a silent Cluster master), the take waits without asking it', async () => {
    const created = await inRedis();
    const readM = await readFailed(created.cookieValue);
    const m = patched(readM, { m: 1 });
    const moved = (await written(m.changed, m.concurrency, 'cookie'))!;
    const redis = core.backends.stores.redis as unknown as { availableFor(idHash: string): boolean };
    const inner = redisGuard(core.backends).inner as unknown as { load(token: string): Promise<unknown> };
    const [availableFor, load] = [redis.availableFor, inner.load];
    let asked = 0;
    redis.availableFor = () => false;
    inner.load = (token: string) => {
      asked++;
      return load.call(inner, token);
    };
    try {
      for (let i = 0; i < 3; i++) await core.backends.open(moved.cookieValue);
      expect(asked, 'Redis reads').to.equal(0);
      expect(untaken().has(readM.idHash), 'the take, still to be made').to.equal(true);
    } finally {
      redis.availableFor = availableFor;
      inner.load = load;
    }
    await tabThenEveryCookieReads(created.cookieValue, 'redis', [['the move', moved.cookieValue]], { w0: 0, m: 1 });
  });

  it('a read refused by an open breaker leaves nothing to take', async () => {
    const created = await inRedis();
    nextRedisReadRefused();
    const read = (await core.backends.open(created.cookieValue))!;
    expect(read.backend).to.equal('database');
    expect(untaken().has(read.idHash)).to.equal(false);
  });
});

describe('over HTTP: a request served the database copy after its Redis read failed, the session opened from Redis before it wrote', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let dir: string;
  let app: InProcessApp;
  let switchboard: Switchboard;
  let url: string;
  const env = redisEnv();

  before(async () => {
    db = await createTestDatabase('switchboard_redis_read_failed_http');
    dir = makeScratchDir('switchboard-redis-read-failed-http-');
    app = await serveInProcess(loadConfig({ DATA_DIR: dir, DATABASE_URL: db.url, LOG_LEVEL: 'silent', NODE_ENV: 'test', SESSION_STORAGE: 'redis', STORE_TIMEOUT_MS: '250', ...env }));
    ({ switchboard, url } = app);
  });
  after(async () => {
    await app?.close();
    await redisCommand(6379, ['EVAL', "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 0", '0', `${env.REDIS_KEY_PREFIX}*`]);
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  const flag = (backend: BackendName) => switchboard.deps.flag.override.set(backend, 'admin');

  /** `sendWithCookie`: the cookie the request was given back. */
  const send = async (client: Client, sid: string, method: 'GET' | 'PATCH', body?: unknown) => (await sendWithCookie(client, sid, method, body)).sid;

  /** The next open of a session runs `meanwhile` once it has been served, before its request goes on. */
  function afterNextOpen(meanwhile: () => Promise<unknown>) {
    const backends = switchboard.deps.backends;
    const open = backends.open;
    backends.open = async (cookieValue: string) => {
      backends.open = open;
      const record = await open.call(backends, cookieValue);
      await meanwhile();
      return record;
    };
  }

  it("moved into the cookie by that request's PATCH: a tab's save on the Redis copy after it is not lost", async () => {
    await flag('redis');
    const client = new Client(url);
    await client.signup();
    const redisCookie = await send(client, client.cookies.get('sid')!, 'PATCH', { preferences: { w0: 0 } });
    expect(redisCookie).to.match(/^r\./);
    // M's Redis read times out; before M's write, a tab's GET with the cookie naming Redis is served from Redis.
    nextRedisReadTimesOut(switchboard.deps.backends);
    afterNextOpen(async () => {
      await send(new Client(url), redisCookie, 'GET');
      await flag('cookie');
    });
    const moved = await send(client, redisCookie, 'PATCH', { preferences: { m: 1 } });
    expect(moved, 'M moved the session into the cookie').to.match(/^c\./);
    await flag('redis');
    const tab = new Client(url);
    tab.csrfToken = client.csrfToken;
    const third = await send(tab, redisCookie, 'PATCH', { preferences: { t: 2 } });
    for (const [which, cookieValue] of [['M', moved], ["the tab's request", third], ['a request sent with the cookie naming Redis', redisCookie]] as const) {
      const now = (await switchboard.deps.backends.open(cookieValue))!;
      expect(now.data.preferences, `read with the cookie of ${which}`).to.deep.equal({ w0: 0, m: 1, t: 2 });
    }
  });
});
