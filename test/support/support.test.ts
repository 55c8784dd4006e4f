import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { expect } from 'chai';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { freePort } from './ports.js';
import { connectPostgres, createTestDatabase, ensureServices, type PgClient, type TestDatabase } from './postgres.js';
import { startRedisCluster, type RedisClusterProcess } from './redis-cluster.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from './redis-server.js';

/** No reconnects, no queueing: a command against a dead or hung server fails instead of waiting. */
const failFast: RedisOptions = {
  lazyConnect: true,
  maxRetriesPerRequest: 0,
  enableOfflineQueue: false,
  retryStrategy: () => null,
  connectTimeout: 2000,
};

async function connectRedis(url: string, extra: RedisOptions = {}): Promise<Redis> {
  const client = new Redis(url, { ...failFast, ...extra });
  client.on('error', () => {
    // Expected while a test has the server down; commands report it themselves.
  });
  await client.connect();
  return client;
}

/** Gone means no such process, or a zombie nobody has reaped yet. */
function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function refusesConnections(port: number): Promise<boolean> {
  try {
    await redisCommand(port, ['PING'], 500);
    return false;
  } catch (err) {
    return err instanceof Error && 'code' in err && err.code === 'ECONNREFUSED';
  }
}

/** Whether the redis-server answering on `port` is the process `pid`. */
async function answersAs(port: number, pid: number): Promise<boolean> {
  const info = await redisCommand(port, ['INFO', 'server'], 2000).catch(() => '');
  return new RegExp(`^process_id:${pid}\\r?$`, 'm').test(info);
}

describe('test support (needs redis-server and PostgreSQL on this machine)', function () {
  this.timeout(60_000);

  describe('freePort', () => {
    it('returns a port on 127.0.0.1 that can be listened on', async () => {
      const port = await freePort();
      expect(port).to.be.within(1024, 65535);
      expect(port).to.not.equal(6379);
      const server = createServer();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve());
      });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('does not hand out the same port twice', async () => {
      const ports = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
      expect(new Set(ports).size).to.equal(ports.length);
    });
  });

  describe('a Redis started by startRedis', () => {
    let redis: RedisProcess;
    const clients: Redis[] = [];
    const client = async (extra: RedisOptions = {}): Promise<Redis> => {
      const c = await connectRedis(redis.url, extra);
      clients.push(c);
      return c;
    };

    before(async () => {
      redis = await startRedis();
    });
    afterEach(() => {
      for (const c of clients.splice(0)) c.disconnect();
    });
    after(async () => {
      await redis?.stop();
    });

    it('is its own server on a free port, not the machine Redis', () => {
      expect(redis.port).to.not.equal(6379);
      expect(redis.url).to.equal(`redis://127.0.0.1:${redis.port}/0`);
      expect(redis.pid).to.be.a('number');
    });

    it('stores and returns values through ioredis', async () => {
      const c = await client();
      expect(await c.set('greeting', 'hello')).to.equal('OK');
      expect(await c.get('greeting')).to.equal('hello');
    });

    describe('when killed', () => {
      it('fails the next command, and works again (empty) after restart', async () => {
        const c = await client();
        await c.set('survives-crash', 'no');
        await redis.kill();
        expect(redis.pid).to.equal(undefined);
        let failure: unknown;
        await c.get('survives-crash').catch((err: unknown) => {
          failure = err;
        });
        expect(failure).to.be.instanceOf(Error);
        expect(await refusesConnections(redis.port)).to.equal(true);

        await redis.restart();
        const again = await client();
        expect(await again.get('survives-crash')).to.equal(null);
        expect(await again.set('after-restart', 'yes')).to.equal('OK');
        expect(await again.get('after-restart')).to.equal('yes');
      });
    });

    describe('when paused', () => {
      it('leaves commands unanswered, then answers again with its data intact', async () => {
        const c = await client();
        await c.set('kept-through-pause', 'yes');
        const hung = await client({ commandTimeout: 300 });
        await redis.pause(3000);
        let failure: unknown;
        await hung.ping().catch((err: unknown) => {
          failure = err;
        });
        expect(failure).to.be.instanceOf(Error).with.property('message').that.matches(/timed out/i);
        redis.resume();
        await waitUntil('the paused server to answer', async () => (await redisCommand(redis.port, ['PING'])) === 'PONG');
        expect(await c.get('kept-through-pause')).to.equal('yes');
      });

      it('resumes by itself after the given time', async () => {
        await redis.pause(200);
        await waitUntil('the paused server to resume', async () => (await redisCommand(redis.port, ['PING'])) === 'PONG');
      });
    });

    describe('when stopped', () => {
      it('exits, frees its port, and a stopped server can be restarted', async () => {
        const pid = redis.pid;
        await redis.stop();
        expect(pid).to.be.a('number');
        expect(processGone(pid as number)).to.equal(true);
        expect(await refusesConnections(redis.port)).to.equal(true);
        await redis.restart();
        expect(await redisCommand(redis.port, ['PING'])).to.equal('PONG');
      });
    });

    it('refuses port 6379', async () => {
      let failure: unknown;
      await startRedis({ port: 6379 }).catch((err: unknown) => {
        failure = err;
      });
      expect(failure).to.be.instanceOf(Error).with.property('message').that.matches(/6379/);
    });
  });

  describe('the exit hook', () => {
    it('kills a Redis the test process leaves running', async () => {
      const script = [
        "import { startRedis } from './test/support/redis-server.ts';",
        'const redis = await startRedis();',
        'console.log(JSON.stringify({ pid: redis.pid, port: redis.port }));',
        'process.exit(0);',
      ].join('\n');
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
      });
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).to.equal(0);
      const started = JSON.parse(stdout.trim()) as { pid: number; port: number };
      await waitUntil('the orphaned redis-server to be gone', () => processGone(started.pid), 100);
      // Its port may already be another's (tests started elsewhere on this machine pick free
      // ports too): what matters is that the orphan no longer answers on it.
      expect(await refusesConnections(started.port) || !(await answersAs(started.port, started.pid))).to.equal(true);
    });
  });

  describe('a cluster started by startRedisCluster', () => {
    let cluster: RedisClusterProcess;
    let client: Cluster;

    before(async () => {
      cluster = await startRedisCluster();
      client = new Cluster(cluster.nodes, { clusterRetryStrategy: () => null, redisOptions: { connectTimeout: 2000 } });
      client.on('error', () => {
        // Reported through the commands.
      });
    });
    after(async () => {
      client?.disconnect();
      await cluster?.stop();
    });

    it('describes three masters in the REDIS_CLUSTER_NODES format', () => {
      expect(cluster.nodes).to.have.length(3);
      expect(cluster.nodes.map((node) => node.port)).to.not.include(6379);
      expect(cluster.nodesEnv).to.equal(cluster.nodes.map((node) => `127.0.0.1:${node.port}`).join(','));
      expect(cluster.nodesEnv).to.match(/^127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+){2}$/);
    });

    it('reports cluster_state:ok on every node', async () => {
      for (const node of cluster.nodes) {
        const direct = await connectRedis(`redis://${node.host}:${node.port}`);
        try {
          expect(await direct.cluster('INFO')).to.match(/^cluster_state:ok\r?$/m);
        } finally {
          direct.disconnect();
        }
      }
    });

    it('stores and returns keys whose slots lie on every master', async () => {
      const keys = Array.from({ length: 30 }, (_, i) => `session:${i}`);
      for (const key of keys) expect(await client.set(key, `value of ${key}`)).to.equal('OK');
      for (const key of keys) expect(await client.get(key)).to.equal(`value of ${key}`);

      const ranges = await client.cluster('SLOTS');
      const owners = new Set<number>();
      for (const key of keys) {
        const slot = await client.cluster('KEYSLOT', key);
        const range = ranges.find(([start, end]) => slot >= start && slot <= end);
        const owner = range?.[2];
        if (owner) owners.add(Number(owner[1]));
      }
      expect([...owners].sort()).to.deep.equal(cluster.nodes.map((node) => node.port).sort());
    });

    it('takes a killed node back, with its slots and data gone, once it is restarted', async function () {
      this.timeout(120_000);
      const node = cluster.processes[1];
      if (!node) throw new Error('the cluster has no second node');
      const id = await redisCommand(node.port, ['CLUSTER', 'MYID']);
      await node.kill();
      await waitUntil(
        'the others to mark the killed node failed',
        async () => /^cluster_state:fail\r?$/m.test(await redisCommand(cluster.nodes[0]?.port ?? 0, ['CLUSTER', 'INFO'])),
        600,
      );
      await node.restart();
      await cluster.waitUntilOk();
      expect(await redisCommand(node.port, ['CLUSTER', 'MYID'])).to.equal(id);
      const keys = Array.from({ length: 30 }, (_, i) => `session:${i}`);
      const values = await Promise.all(keys.map((key) => client.get(key)));
      expect(values.filter((value) => value === null).length).to.be.greaterThan(0);
      expect(values.filter((value) => value !== null).length).to.be.greaterThan(0);
    });
  });

  describe('a database made by createTestDatabase', () => {
    let database: TestDatabase | undefined;
    const clients: PgClient[] = [];

    after(async () => {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      await database?.drop();
    });

    it('can be connected to, used, and dropped while a connection is still open', async () => {
      database = await createTestDatabase('support-test');
      expect(database.name).to.match(/^support_test_\d+_[0-9a-f]{8}$/);
      expect(database.url).to.equal(`postgres://postgres@127.0.0.1:5432/${database.name}`);

      const user = await connectPostgres(database.url);
      clients.push(user);
      await user.query('CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)');
      await user.query('INSERT INTO notes (body) VALUES ($1)', ['hello']);
      expect((await user.query('SELECT body FROM notes')).rows).to.deep.equal([{ body: 'hello' }]);

      const lingering = await connectPostgres(database.url);
      let lingeringError: unknown;
      lingering.on('error', (err) => {
        lingeringError = err;
      });
      await user.end();

      await database.drop();
      await database.drop(); // a second drop is harmless

      const admin = await connectPostgres('postgres://postgres@127.0.0.1:5432/test');
      clients.push(admin);
      const found = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database.name]);
      expect(found.rows).to.have.length(0);
      await waitUntil('the lingering connection to be ended', () => lingeringError !== undefined, 100);

      let connectFailure: unknown;
      await connectPostgres(database.url).catch((err: unknown) => {
        connectFailure = err;
      });
      expect(connectFailure).to.be.instanceOf(Error).with.property('message').that.matches(/does not exist/);
      database = undefined;
    });
  });

  describe('ensureServices', () => {
    it('passes when PostgreSQL and Redis answer on their standard ports', async () => {
      await ensureServices();
    });
  });
});
