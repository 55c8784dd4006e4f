import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import { CONFIG_VARIABLES, ConfigError, loadConfig } from '../../src/config/config.js';
import { makeScratchDir } from '../support/child-process.js';
import { redisCommand, startRedis, type RedisProcess } from '../support/redis-server.js';

const dataDir = () => makeScratchDir('switchboard-config-');

describe('configuration', () => {
  it('starts on the embedded default with no environment at all', () => {
    const c = loadConfig({ DATA_DIR: dataDir() });
    expect(c.sessions.storage).to.equal('database');
    expect(c.sessions.fallback).to.equal('database');
    expect(c.databaseUrl).to.equal('sqlite:./data/switchboard.sqlite');
    expect(c.port).to.equal(3000);
    expect(c.sessions.secrets).to.have.length(1);
    expect(c.sessions.cookieSecure).to.equal(false);
    expect(c.platformsMaxPerUser).to.equal(100);
  });

  it('keeps the generated development secret across restarts', () => {
    const dir = dataDir();
    expect(loadConfig({ DATA_DIR: dir }).sessions.secrets).to.deep.equal(loadConfig({ DATA_DIR: dir }).sessions.secrets);
  });

  for (const [name, value] of [
    ['SESSION_STORAGE', 'memcached'],
    ['SESSION_FALLBACK', 'disk'],
    ['PORT', 'eighty'],
    ['DATABASE_URL', 'mysql://x'],
    ['REDIS_URL', 'http://x'],
    ['SESSION_IDLE_TIMEOUT', '-5'],
    ['COOKIE_SECURE', 'maybe'],
    ['SESSION_MAX_PER_USER', '1.5'],
    // At least one platform (0 would refuse every create), at most 10000 (the lists are not paged).
    ['PLATFORMS_MAX_PER_USER', '0'],
    ['PLATFORMS_MAX_PER_USER', '10001'],
    ['ADMIN_TOKEN', 'a token with spaces in it'],
    ['SESSION_SECRETS', ' , '],
    ['SESSION_IDLE_TIMEOUT', '0'],
    // Plain decimals only: Number() would take these as 80, 1000 and Infinity.
    ['PORT', '0x50'],
    ['PORT', '1e3'],
    ['STORE_TIMEOUT_MS', 'Infinity'],
    ['SHUTDOWN_DELAY_MS', '60001'],
    ['ROLLBACK_ERROR_RATE', '0x1'],
    ['DATABASE_URL', 'sqlite: '],
    ['DATABASE_URL', 'postgres://bob:hunter2pass@'],
    ['DATABASE_URL', 'postgres://bob:pw@host:notaport/db'],
    ['DATABASE_URL', 'postgresql://u@h:99999/db'],
    ['REDIS_URL', 'redis://127.0.0.1:abc/0'],
    ['REDIS_URL', 'redis://127.0.0.1:70000/0'],
    // The path is the database number: ioredis would send SELECT NaN, or SELECT -1, and fail at start.
    ['REDIS_URL', 'redis://127.0.0.1:6379/abc'],
    ['REDIS_URL', 'redis://127.0.0.1:6379/-1'],
    ['REDIS_URL', 'redis://127.0.0.1:6379/0/extra'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1:99999'],
    ['UNLEASH_URL', 'ftp://unleash.example'],
  ] as const) {
    it(`refuses ${name}=${value} with a message naming the variable`, () => {
      expect(() => loadConfig({ DATA_DIR: dataDir(), [name]: value })).to.throw(ConfigError, new RegExp(`^${name} must be`));
    });
  }

  it('starts with weak but workable settings (a test harness\'s), and says what is weak', () => {
    const c = loadConfig({ DATA_DIR: dataDir(), ADMIN_TOKEN: 'admin', SESSION_SECRETS: 'old,new', SESSION_IDLE_TIMEOUT: '2', SESSION_ABSOLUTE_TIMEOUT: '1' });
    expect(c.adminToken).to.equal('admin');
    expect(c.sessions.secrets).to.deep.equal(['old', 'new']);
    expect(c.sessions.idleTimeoutMs).to.equal(2000);
    expect(c.sessions.absoluteTimeoutMs).to.equal(1000, 'a hard cap below the idle timeout is a plain cap');
    expect(c.sessions.touchIntervalMs).to.equal(1000);
    expect(c.warnings.join('\n')).to.match(/^SESSION_SECRETS: /m).and.match(/^ADMIN_TOKEN: /m);
    expect(loadConfig({ DATA_DIR: dataDir(), ADMIN_TOKEN: 'a-long-enough-admin-token', SESSION_SECRETS: 'x'.repeat(32) }).warnings).to.deep.equal([]);
    // Which one, by position (never by value): the operator rotating secrets must know which to replace.
    const second = loadConfig({ DATA_DIR: dataDir(), SESSION_SECRETS: `${'x'.repeat(32)},short-one` }).warnings.join('\n');
    expect(second).to.include('secret #2 of 2').and.not.include('short-one');
  });

  it('never shows the password of a URL it refuses', () => {
    for (const [name, value] of [
      ['DATABASE_URL', 'postgres://app:SuperSecretPw9@127.0.0.1:99999/db'],
      ['DATABASE_URL', 'mysql://u:SuperSecretPw9@h/x'],
      ['REDIS_URL', 'http://:SuperSecretPw9@127.0.0.1:6379/0'],
    ] as const) {
      let message = '';
      try {
        loadConfig({ DATA_DIR: dataDir(), [name]: value });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, value).to.match(new RegExp(`^${name} must be`));
      expect(message).to.not.include('SuperSecretPw9');
      expect(message).to.include('…@');
    }
  });

  it('takes a blank or space-padded value as the default, never as 0', () => {
    const c = loadConfig({ DATA_DIR: dataDir(), PORT: '   ', SESSION_MAX_PER_USER: ' ', ROLLBACK_ERROR_RATE: ' ', SESSION_IDLE_TIMEOUT: '\t', MIRROR_FLUSH_MS: '', STORE_TIMEOUT_MS: ' 250 ' });
    expect(c.port).to.equal(3000);
    expect(c.sessions.maxPerUser).to.equal(0);
    expect(c.rollback.errorRate).to.equal(0.05);
    expect(c.sessions.idleTimeoutMs).to.equal(7_200_000);
    expect(c.sessions.mirrorFlushMs).to.equal(100);
    expect(c.stores.timeoutMs).to.equal(250);
  });

  it('refuses a touch interval that would let an active session expire, and keeps the default below the idle timeout', () => {
    expect(() => loadConfig({ DATA_DIR: dataDir(), SESSION_IDLE_TIMEOUT: '60', SESSION_TOUCH_INTERVAL: '120' })).to.throw(ConfigError, /^SESSION_TOUCH_INTERVAL must be less than SESSION_IDLE_TIMEOUT/);
    expect(() => loadConfig({ DATA_DIR: dataDir(), SESSION_IDLE_TIMEOUT: '60', SESSION_TOUCH_INTERVAL: '60' })).to.throw(ConfigError, /^SESSION_TOUCH_INTERVAL/);
    expect(loadConfig({ DATA_DIR: dataDir(), SESSION_IDLE_TIMEOUT: '60' }).sessions.touchIntervalMs).to.equal(30_000);
    expect(loadConfig({ DATA_DIR: dataDir() }).sessions.touchIntervalMs).to.equal(60_000);
  });

  it('refuses a __Host- or __Secure- cookie name without Secure: browsers would drop the cookie', () => {
    expect(() => loadConfig({ DATA_DIR: dataDir(), SESSION_COOKIE_NAME: '__Host-sid' })).to.throw(ConfigError, /^SESSION_COOKIE_NAME .*COOKIE_SECURE/);
    expect(loadConfig({ DATA_DIR: dataDir(), SESSION_COOKIE_NAME: '__Host-sid', COOKIE_SECURE: 'true' }).sessions.cookieName).to.equal('__Host-sid');
  });

  it('refuses a DATA_DIR it cannot keep the development secret in, or a short secret found there, naming DATA_DIR', () => {
    const file = path.join(dataDir(), 'a-file');
    writeFileSync(file, 'x');
    for (const dir of [file, path.join(file, 'below'), '/proc/switchboard-nope']) {
      expect(() => loadConfig({ DATA_DIR: dir })).to.throw(ConfigError, /^DATA_DIR must be a directory Switchboard can write/);
    }
    for (const content of ['\n', 'x', 'short secret\n']) {
      const dir = dataDir();
      writeFileSync(path.join(dir, 'session-secret'), content);
      expect(() => loadConfig({ DATA_DIR: dir })).to.throw(ConfigError, /^DATA_DIR: .*session-secret holds a secret shorter than 32 characters/);
    }
  });

  it('reads a boolean in any letter case', () => {
    for (const [value, expected] of [['TRUE', true], ['True', true], ['YES', true], ['1', true], ['FALSE', false], ['No', false], ['0', false]] as const) {
      expect(loadConfig({ DATA_DIR: dataDir(), COOKIE_SECURE: value }).sessions.cookieSecure, value).to.equal(expected);
    }
  });

  it('requires SESSION_SECRETS in production, and defaults COOKIE_SECURE on there', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).to.throw(ConfigError, /^SESSION_SECRETS must be set/);
    const c = loadConfig({ NODE_ENV: 'production', SESSION_SECRETS: 'a'.repeat(32) + ',' + 'b'.repeat(40) });
    expect(c.sessions.cookieSecure).to.equal(true);
    expect(c.sessions.secrets).to.deep.equal(['a'.repeat(32), 'b'.repeat(40)]);
  });

  it('never echoes a secret in the error', () => {
    expect(() => loadConfig({ DATA_DIR: dataDir(), ADMIN_TOKEN: 'hunter2 hunter2' })).to.throw(ConfigError).that.satisfies((e: Error) => !e.message.includes('hunter2'));
    expect(loadConfig({ DATA_DIR: dataDir(), ADMIN_TOKEN: 'hunter2' }).warnings.join(' ')).to.not.include('hunter2');
  });

  it('lists every variable in .env.example, and nothing else', () => {
    const example = readFileSync(path.resolve(import.meta.dirname, '../../.env.example'), 'utf8');
    const listed = [...example.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]);
    expect([...listed].sort()).to.deep.equal([...CONFIG_VARIABLES].sort());
  });

  it('.env.example, copied to .env as it is, means exactly the defaults (a computed one included)', () => {
    const example = parseDotenv(readFileSync(path.resolve(import.meta.dirname, '../../.env.example'), 'utf8'));
    for (const extra of [{}, { SESSION_IDLE_TIMEOUT: '60' }]) {
      const dir = dataDir();
      expect(loadConfig({ ...example, ...extra, DATA_DIR: dir })).to.deep.equal(loadConfig({ ...extra, DATA_DIR: dir }));
    }
  });

  /** `npm start`'s stderr lines and exit status with `env` (and nothing else) as its environment. */
  function start(env: Record<string, string>) {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      env: { PATH: process.env.PATH, DATA_DIR: dataDir(), ...env },
      encoding: 'utf8',
      timeout: 25_000,
    });
    return { status: run.status, lines: run.stderr.trim().split('\n') };
  }

  it('stops `npm start` with one line naming the variable, not a stack trace', function () {
    this.timeout(30_000);
    const { status, lines } = start({ SESSION_STORAGE: 'floppy' });
    expect(status).to.equal(1);
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/SESSION_STORAGE must be cookie, database or redis/);
  });

  it('stops `npm start` with one line naming PORT, HOST or DATABASE_URL when it cannot listen or store', async function () {
    this.timeout(90_000);
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((taken.address() as AddressInfo).port);
      const dir = dataDir();
      const cases: Array<[Record<string, string>, RegExp]> = [
        [{ PORT: port, DATABASE_URL: `sqlite:${dir}/a.sqlite` }, new RegExp(`^switchboard: could not start: PORT: 127\\.0\\.0\\.1:${port} is already in use`)],
        [{ HOST: '256.1.1.1', PORT: '0', DATABASE_URL: `sqlite:${dir}/b.sqlite` }, /^switchboard: could not start: HOST: cannot listen on 256\.1\.1\.1/],
        // Node's recursive mkdir never returns on such a path; start-up must not hang in silence.
        [{ DATABASE_URL: 'sqlite:/proc/switchboard-nope/x.sqlite' }, /^switchboard: could not start: DATABASE_URL: cannot create the folder/],
        [{ DATABASE_URL: `sqlite:${dir}` }, /^switchboard: could not start: DATABASE_URL: cannot open the SQLite file .*SQLITE_CANTOPEN/],
        // A folder that takes no files (procfs has no blocks at all): not called a full disk.
        [{ DATABASE_URL: 'sqlite:/proc/x.sqlite' }, /^switchboard: could not start: DATABASE_URL: cannot open the SQLite file \/proc\/x\.sqlite \((?!.*full)/],
        // Nothing listens on port 1; the password is never printed.
        [{ DATABASE_URL: 'postgres://postgres:hunter2-secret@127.0.0.1:1/test' }, /^switchboard: could not start: DATABASE_URL: cannot connect to PostgreSQL at 127\.0\.0\.1:1\/test \((?!.*hunter2)/],
        // A server that accepts and never answers (a hung primary): this test's own, blocked by spawnSync.
        [{ DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/test` }, new RegExp(`^switchboard: could not start: DATABASE_URL: cannot connect to PostgreSQL at 127\\.0\\.0\\.1:${port}/test \\(.*timeout`)],
        [{ DATA_DIR: '/proc/switchboard-nope' }, /^switchboard: configuration error: DATA_DIR must be a directory/],
      ];
      for (const [env, expected] of cases) {
        const { status, lines } = start(env);
        expect(status, JSON.stringify(env)).to.equal(1);
        expect(lines, JSON.stringify(env)).to.have.length(1);
        expect(lines[0]).to.match(expected);
      }
    } finally {
      taken.close();
    }
  });
});

describe('a REDIS_URL naming a database that Redis does not have', function () {
  this.timeout(60_000);
  let redis: RedisProcess;
  before(async () => {
    redis = await startRedis({ extraArgs: () => ['--databases', '4'] });
  });
  after(() => redis?.stop());

  it('stops `npm start` with one line naming REDIS_URL, since ioredis would go on in database 0', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      env: { PATH: process.env.PATH, DATA_DIR: dataDir(), PORT: '0', REDIS_URL: `redis://127.0.0.1:${redis.port}/4` },
      encoding: 'utf8',
      timeout: 25_000,
    });
    expect(run.status, run.stderr).to.equal(1);
    expect(run.stderr.trim().split('\n')).to.deep.equal([
      'switchboard: configuration error: REDIS_URL: Redis has no database 4 (ERR DB index is out of range); name a database this Redis has (0–15 by default) and its user may select',
    ]);
    expect(run.stdout, 'nor a log line saying it goes on without Redis').to.not.include('stays down');
  });

  it('stops it the same way when the ACL user of REDIS_URL may not select its database, and never shows the password', async () => {
    await redisCommand(redis.port, ['ACL', 'SETUSER', 'noselect', 'on', '>Acl-Password-Not-Shown', '~*', '&*', '+@all', '-select']);
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      env: { PATH: process.env.PATH, DATA_DIR: dataDir(), PORT: '0', REDIS_URL: `redis://noselect:Acl-Password-Not-Shown@127.0.0.1:${redis.port}/2` },
      encoding: 'utf8',
      timeout: 25_000,
    });
    expect(run.status, run.stderr).to.equal(1);
    const lines = run.stderr.trim().split('\n');
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/^switchboard: configuration error: REDIS_URL: this Redis user may not select database 2 \(NOPERM .*\): allow \+select in its ACL/);
    expect(run.stderr + run.stdout).to.not.include('Acl-Password-Not-Shown');
  });
});

describe('running without Redis (REDIS_URL=none)', function () {
  this.timeout(30_000);
  it('refuses redis as the storage or fallback without a Redis to use', () => {
    expect(() => loadConfig({ DATA_DIR: dataDir(), REDIS_URL: 'none', SESSION_STORAGE: 'redis' })).to.throw(ConfigError, /^REDIS_URL must name a Redis server/);
  });

  it('refuses "none" beside Cluster nodes or Sentinels, naming REDIS_URL (it gives their credentials there)', () => {
    for (const [name, value] of [['REDIS_CLUSTER_NODES', '127.0.0.1:7000,127.0.0.1:7001'], ['REDIS_SENTINELS', '127.0.0.1:26379']]) {
      expect(() => loadConfig({ DATA_DIR: dataDir(), REDIS_URL: 'none', [name!]: value })).to.throw(ConfigError, new RegExp(`^REDIS_URL must be unset or a redis:// URL giving credentials when ${name} is set`));
    }
  });

  it('refuses TLS with Sentinels, which it would otherwise drop in silence', () => {
    expect(() => loadConfig({ DATA_DIR: dataDir(), REDIS_URL: 'rediss://:pw@127.0.0.1:6380/0', REDIS_SENTINELS: '127.0.0.1:26379' })).to.throw(ConfigError, /^REDIS_URL: rediss:\/\/ \(TLS\) is not supported with REDIS_SENTINELS/);
  });
});
