/**
 * Redis at its `maxmemory` under `noeviction`: it answers PING and every read, and refuses every
 * write ("OOM command not allowed"). Users stay logged in and keep what they change (the writes
 * go to the database fallback), the operator is told, and once Redis has memory again the
 * sessions move back with everything they gained meanwhile.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { sample } from './metrics-text.js';

const PREFIX = 'full:';

describe('Redis full (maxmemory reached, noeviction)', function () {
  this.timeout(120_000);
  let redis: RedisProcess;
  let app: AppProcess;
  before(async () => {
    redis = await startRedis();
    app = await startApp({ SESSION_STORAGE: 'redis', REDIS_URL: redis.url, REDIS_KEY_PREFIX: PREFIX, BREAKER_HALF_OPEN_AFTER_MS: '200' });
  });
  after(async () => {
    await app?.stop();
    await redis?.stop();
  });
  afterEach(() => makeRoom());

  const rc = (...args: string[]) => redisCommand(redis.port, args);
  /** Other data fills Redis up to its limit: from now on it refuses writes, as a full production Redis does. */
  async function fillUp() {
    await rc('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    await rc('EVAL', "for i = 1, 300 do redis.call('SET', 'other:' .. i, string.rep('x', 10000)) end return 1", '0');
    const used = Number(/used_memory:(\d+)/.exec(await rc('INFO', 'memory'))?.[1]);
    await rc('CONFIG', 'SET', 'maxmemory', String(used - 300_000));
    await rc('SET', 'other:check', '1').then(
      () => expect.fail('Redis still takes writes'),
      (err: Error) => expect(err.message).to.match(/OOM/),
    );
  }
  async function makeRoom() {
    await rc('CONFIG', 'SET', 'maxmemory', '0');
    await rc('EVAL', "for _, k in ipairs(redis.call('KEYS', 'other:*')) do redis.call('DEL', k) end return 1", '0');
  }

  async function userWithPlatforms(names: string[]) {
    const user = new Client(app.url);
    await user.signup();
    const ids: Record<string, string> = {};
    for (const name of names) ids[name] = ((await user.post('/api/platforms', { name, type: 'web' })).json.platform as { id: string }).id;
    return { user, ids };
  }
  async function seen(user: Client) {
    const res = await user.get('/api/session');
    expect(res.status, res.text).to.equal(200);
    return { platform: (res.json.platform as { name: string } | null)?.name, preferences: res.json.preferences, backend: (res.json.session as { backend: string }).backend };
  }

  it('keeps every change made while Redis refuses writes, also once Redis takes them again and after it loses the key', async () => {
    const { user, ids } = await userWithPlatforms(['p1', 'p2', 'p3']);
    expect((await user.post(`/api/platforms/${ids.p1}/activate`)).status).to.equal(200);
    expect(await seen(user)).to.include({ platform: 'p1', backend: 'redis' });

    await fillUp();
    expect((await user.post(`/api/platforms/${ids.p2}/activate`)).status).to.equal(200);
    expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status).to.equal(200);
    // Each read wants the session back in Redis, where the flag says; the copy left there is the
    // old one, and must not be what the user gets.
    for (let i = 0; i < 3; i++) expect(await seen(user), `read ${i + 1} while full`).to.deep.include({ platform: 'p2', preferences: { theme: 'dark' } });

    await makeRoom();
    await waitUntil('the session back in Redis', async () => (await seen(user)).backend === 'redis', 100);
    expect(await seen(user)).to.deep.include({ platform: 'p2', preferences: { theme: 'dark' } });
    expect((await user.post(`/api/platforms/${ids.p3}/activate`)).status).to.equal(200);
    expect(await seen(user)).to.deep.include({ platform: 'p3', preferences: { theme: 'dark' } });

    // Redis loses the key (an eviction, a restart without persistence): the database copy, written
    // behind within MIRROR_FLUSH_MS (100 ms; waited for twenty times over, for a loaded machine),
    // serves it, with the last change.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(await rc('EVAL', `local n = 0 for _, k in ipairs(redis.call('KEYS', '${PREFIX}s:*')) do n = n + redis.call('DEL', k) end return n`, '0')).to.equal('1');
    expect(await seen(user)).to.deep.include({ platform: 'p3', preferences: { theme: 'dark' } });
  });

  it('serves a session that starts while Redis is full: its changes are answered 200 and kept, and it names where it is', async () => {
    await fillUp();
    const { user, ids } = await userWithPlatforms(['p1']);
    expect(user.sessionCookie(), 'a database cookie').to.match(/^d\./);
    for (let n = 1; n <= 3; n++) {
      const res = await user.patch('/api/session', { preferences: { n } });
      expect(res.status, `change ${n}: ${res.text}`).to.equal(200);
      expect(await seen(user), `after change ${n}`).to.deep.include({ preferences: { n }, backend: 'database' });
    }
    const switched = await user.post(`/api/platforms/${ids.p1}/activate`);
    expect(switched.status, switched.text).to.equal(200);
    expect(await seen(user)).to.deep.include({ platform: 'p1', preferences: { n: 3 }, backend: 'database' });
    const listed = (await user.get('/api/sessions')).json.sessions as Array<{ backend: string; current: boolean }>;
    expect(listed.map((s) => [s.backend, s.current])).to.deep.equal([['database', true]]);

    await makeRoom();
    await waitUntil('the session in Redis', async () => (await seen(user)).backend === 'redis', 100);
    expect(await seen(user)).to.deep.include({ platform: 'p1', preferences: { n: 3 } });
  });

  it('says so: /readyz and session_store_up name Redis down, the log says what Redis answered; up again once it has room', async () => {
    const { user } = await userWithPlatforms([]);
    const redisHealth = async () => ((await new Client(app.url).get('/readyz')).json.backends as Record<string, string>).redis;
    const up = async () => sample(await (await fetch(`${app.url}/metrics`)).text(), 'session_store_up', { backend: 'redis' });
    expect(await redisHealth()).to.equal('up');

    await fillUp();
    expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status).to.equal(200);
    expect(await redisHealth(), 'readiness while full').to.equal('down');
    await waitUntil('session_store_up{backend="redis"} 0', async () => (await up()) === 0, 200);
    const told = app.output().split('\n').filter((l) => l.includes('session backend redis failed an operation'));
    expect(told.join('\n'), 'the log').to.include('OOM command not allowed');

    await makeRoom();
    await waitUntil('readiness says up again', async () => (await redisHealth()) === 'up', 100);
    await waitUntil('session_store_up{backend="redis"} 1', async () => (await up()) === 1, 200);
  });
});

/** The least-privilege ACL README gives for Switchboard's Redis user (prefix `acl:`). */
const LEAST_PRIVILEGE = ['on', '>Acl-Password-0123', 'resetkeys', '~acl:*', 'resetchannels', '&acl:*', '-@all', '+get', '+set', '+del', '+pttl', '+pexpire', '+eval', '+evalsha', '+hset', '+hgetall', '+hdel', '+publish', '+subscribe', '+info', '+ping'];

describe('a Redis user with the least-privilege ACL, and one without scripting', function () {
  this.timeout(120_000);
  let redis: RedisProcess;
  before(async () => {
    redis = await startRedis();
    await redisCommand(redis.port, ['ACL', 'SETUSER', 'sb', ...LEAST_PRIVILEGE]);
    await redisCommand(redis.port, ['ACL', 'SETUSER', 'noscripts', ...LEAST_PRIVILEGE, '-eval', '-evalsha']);
  });
  after(() => redis?.stop());

  async function appAs(user: string) {
    return startApp({ SESSION_STORAGE: 'redis', REDIS_URL: `redis://${user}:Acl-Password-0123@127.0.0.1:${redis.port}/0`, REDIS_KEY_PREFIX: 'acl:', SESSION_TOUCH_INTERVAL: '1' });
  }

  it('serves everything with the least-privilege ACL: sessions in Redis, changes, logout heard by another instance at once', async () => {
    const [one, two] = [await appAs('sb'), await appAs('sb')];
    try {
      const user = new Client(one.url);
      await user.signup();
      expect(user.sessionCookie()).to.match(/^r\./);
      expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status).to.equal(200);
      expect(((await user.get('/api/session')).json.session as { backend: string }).backend).to.equal('redis');
      expect(((await new Client(one.url).get('/readyz')).json.backends as Record<string, string>).redis).to.equal('up');
      const cookie = user.sessionCookie()!;
      expect((await user.post('/api/logout')).status).to.equal(204);
      const elsewhere = new Client(two.url);
      elsewhere.cookies.set('sid', cookie);
      expect((await elsewhere.get('/api/session')).status).to.equal(401);
      for (const app of [one, two]) expect(app.output(), 'nothing refused').to.not.match(/NOPERM/);
    } finally {
      await one.stop();
      await two.stop();
    }
  });

  it('says Redis is down, and why, when its user may not run scripts: sessions are served from the database meanwhile', async () => {
    const app = await appAs('noscripts');
    try {
      expect(((await new Client(app.url).get('/readyz')).json.backends as Record<string, string>).redis).to.equal('down');
      await waitUntil('the refusal logged', () => /"operation":"probe"/.test(app.output()) && /NOPERM/.test(app.output()), 100);
      const user = new Client(app.url);
      await user.signup();
      expect((await user.patch('/api/session', { preferences: { theme: 'dark' } })).status).to.equal(200);
      expect(await user.get('/api/session').then((r) => r.json.preferences)).to.deep.equal({ theme: 'dark' });
    } finally {
      await app.stop();
    }
  });
});
