import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { redisCommand } from './redis-server.js';

/** The machine's PostgreSQL: trust auth for `postgres`; `test` is the database to administer from. */
const PG_HOST = '127.0.0.1';
const PG_PORT = 5432;
const ADMIN_URL = `postgres://postgres@${PG_HOST}:${PG_PORT}/test`;
const REDIS_PORT = 6379;

const START_POSTGRES = 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start';
const START_REDIS =
  'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log';

/**
 * The part of `pg` used here. The project has no @types/pg, so the module is loaded through
 * require with this shape rather than imported untyped.
 */
export interface PgClient {
  connect(): Promise<void>;
  query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
  end(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): void;
}
interface PgModule {
  Client: new (config: { connectionString: string; connectionTimeoutMillis?: number }) => PgClient;
  escapeIdentifier(name: string): string;
}
const pg = createRequire(import.meta.url)('pg') as PgModule;

export interface TestDatabase {
  /** `postgres://postgres@127.0.0.1:5432/<name>` */
  readonly url: string;
  readonly name: string;
  /** Ends every remaining connection to the database and drops it. Safe to call twice. */
  drop(): Promise<void>;
}

/** Databases created and not yet dropped; the exit hook drops them with psql as a last resort. */
const undropped = new Set<string>();
let exitHookInstalled = false;

/**
 * Creates an empty database named `<prefix>_<pid>_<random>` on the machine's PostgreSQL.
 * Drop it in the suite's `after` hook; one left behind is dropped when the process exits.
 */
export async function createTestDatabase(prefix: string): Promise<TestDatabase> {
  const name = databaseName(prefix);
  await withAdmin((admin) => admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
  undropped.add(name);
  installExitHook();
  return {
    name,
    url: `postgres://postgres@${PG_HOST}:${PG_PORT}/${name}`,
    drop: async () => {
      // WITH (FORCE) (PostgreSQL 13+) also ends connections opened after the terminate.
      await withAdmin(async (admin) => {
        await admin.query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
          [name],
        );
        await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      });
      undropped.delete(name);
    },
  };
}

/** A connected `pg` client (give it an `error` listener if its server side may go away). */
export async function connectPostgres(url: string): Promise<PgClient> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await client.connect();
  return client;
}

/**
 * Runs `work` with a client connected to `url`, and ends the client after. A server side that
 * goes away meanwhile (a test cutting the link) fails the pending query, which is what `work` sees.
 */
export async function withPostgres<T>(url: string, work: (client: PgClient) => Promise<T>): Promise<T> {
  const client = await connectPostgres(url);
  client.on('error', () => undefined);
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * Checks that the machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer;
 * throws one message naming each service that does not and the command that starts it.
 */
export async function ensureServices(): Promise<void> {
  const problems: string[] = [];
  try {
    await withAdmin((admin) => admin.query('SELECT 1'));
  } catch (err) {
    problems.push(`PostgreSQL at ${PG_HOST}:${PG_PORT} does not answer (${reason(err)}); start it with: ${START_POSTGRES}`);
  }
  try {
    const reply = await redisCommand(REDIS_PORT, ['PING'], 2000);
    if (reply !== 'PONG') throw new Error(`PING answered ${JSON.stringify(reply)}`);
  } catch (err) {
    problems.push(`Redis at 127.0.0.1:${REDIS_PORT} does not answer (${reason(err)}); start it with: ${START_REDIS}`);
  }
  if (problems.length > 0) throw new Error(`Tests need local services:\n- ${problems.join('\n- ')}`);
}

function withAdmin<T>(work: (admin: PgClient) => Promise<T>): Promise<T> {
  return withPostgres(ADMIN_URL, work);
}

/** Lower-case letters, digits and `_`, starting with a letter, within PostgreSQL's 63 bytes. */
function databaseName(prefix: string): string {
  let base = prefix.toLowerCase().replace(/[^a-z0-9_]+/g, '_').slice(0, 40);
  if (!/^[a-z]/.test(base)) base = `db_${base}`;
  return `${base}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const name of undropped) {
      spawnSync(
        'psql',
        ['-h', PG_HOST, '-p', String(PG_PORT), '-U', 'postgres', '-d', 'test', '-c', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`],
        { stdio: 'ignore', timeout: 5000 },
      );
    }
  });
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message || err.constructor.name : String(err);
}
