/**
 * The Sequelize connection: SQLite (WAL, the embedded default) or PostgreSQL, from DATABASE_URL.
 */
import { statfsSync } from 'node:fs';
import path from 'node:path';
import { ConnectionError, DatabaseError, QueryTypes, Sequelize, TimeoutError } from 'sequelize';
import { makeDirectory } from '../config/make-directory.js';
import { postgresDriver } from './postgres-driver.js';

/** PostgreSQL: the longest a query may wait for its answer (README, "Database outage"). */
const QUERY_TIMEOUT_MS = 30_000;
/**
 * PostgreSQL: the longest a new connection may take. A server that accepts connections and
 * never answers (a hung primary, a partition behind a load balancer) otherwise held start-up
 * in silence for ever; as the pool's acquire timeout, so a request waits no longer for it.
 */
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * PostgreSQL: the longest a statement waits for a lock (an operator's `SELECT … FOR UPDATE` or
 * `LOCK TABLE`, a migration's `ALTER TABLE`). The request has had its 503 at the store's deadline,
 * but the statement went on waiting on its pooled connection (and, after QUERY_TIMEOUT_MS, the
 * connection went back to the pool still busy): one user's row locked for a minute held all 10
 * connections, and every user got 503. Refused with 55P03: a 503, as for a database that is down.
 */
const LOCK_TIMEOUT_MS = 2_000;

/** The database did not answer in time: treated as down (a 503), like a refused connection. */
class DatabaseStalledError extends Error {
  override name = 'DatabaseStalledError';
  constructor(what: string, ms: number) {
    super(`the database did not answer ${what} within ${ms} ms`);
  }
}

/** `work`, or DatabaseStalledError after `ms` (the work itself goes on, and may still land). */
export function withinDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new DatabaseStalledError(what, ms)), ms)));
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

const SQLITE_PRAGMAS = [
  'PRAGMA journal_mode=WAL',
  'PRAGMA synchronous=NORMAL',
  'PRAGMA busy_timeout=5000',
  // A long reader (a backup, an operator's query) keeps the WAL from being reset, and it grows
  // with every write meanwhile; without a limit it keeps that size, up to a full disk, for good.
  // With one, the next checkpoint after the reader has gone cuts it back.
  `PRAGMA journal_size_limit=${16 * 1024 * 1024}`,
];

/** Whether the filesystem holding `file` has (next to) no room left: SQLite says only "disk I/O error" then. */
function diskFull(file: string): boolean {
  try {
    const { blocks, bavail, bsize } = statfsSync(path.dirname(path.resolve(file)));
    // A file system without blocks (procfs, sysfs) is not full: it takes no files at all.
    return blocks > 0 && bavail * bsize < 1024 * 1024;
  } catch {
    return false;
  }
}

/** PostgreSQL connections each instance holds at most. */
const POOL_MAX = 10;

export async function openDatabase(url: string): Promise<Sequelize> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (file !== ':memory:') {
      try {
        makeDirectory(path.dirname(path.resolve(file)));
      } catch (err) {
        throw new Error(`DATABASE_URL: cannot create the folder for ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
    // Sequelize keeps one connection per SQLite file; WAL lets readers go on while it writes.
    const sequelize = new Sequelize({ dialect: 'sqlite', storage: file, logging: false, retry: { max: 5, match: [/SQLITE_BUSY/] } });
    try {
      for (const pragma of SQLITE_PRAGMAS) await sequelize.query(pragma);
    } catch (err) {
      // Not awaited: closing a SQLite handle that never opened does not settle.
      void sequelize.close().catch(() => undefined);
      throw new Error(`DATABASE_URL: cannot open the SQLite file ${file} (${describeDatabaseError(err)}${diskFull(file) ? '; the disk holding it is full' : ''})`);
    }
    return sequelize;
  }
  const sequelize = new Sequelize(url, {
    dialect: 'postgres',
    dialectModule: postgresDriver,
    logging: false,
    pool: { max: POOL_MAX, min: 0, idle: 10_000, acquire: CONNECT_TIMEOUT_MS },
    // A database that stops answering without closing its connections (a failover, a network
    // partition) fails a query after this long instead of holding its request forever.
    dialectOptions: { lock_timeout: LOCK_TIMEOUT_MS, query_timeout: QUERY_TIMEOUT_MS, connectionTimeoutMillis: CONNECT_TIMEOUT_MS },
  });
  try {
    await sequelize.authenticate();
  } catch (err) {
    await sequelize.close().catch(() => undefined);
    throw new Error(`DATABASE_URL: cannot connect to PostgreSQL at ${withoutCredentials(url)} (${describeDatabaseError(err)})`);
  }
  return sequelize;
}

/**
 * The time by the database's clock (PostgreSQL's; SQLite, embedded, has this machine's), in
 * epoch ms. What a tool run from any machine can agree on with the instances.
 */
export async function databaseNow(sequelize: Sequelize): Promise<number> {
  if (sequelize.getDialect() !== 'postgres') return Date.now();
  const [row] = await sequelize.query<{ now: string }>('SELECT floor(extract(epoch FROM clock_timestamp()) * 1000) AS now', { type: QueryTypes.SELECT });
  return Number(row?.now);
}

/** The driver's code (ECONNREFUSED, SQLITE_CANTOPEN, 28P01…) or first line: what to fix, no stack, no query. */
export function describeDatabaseError(err: unknown): string {
  const e = err as { original?: { code?: string }; parent?: { code?: string }; message?: string };
  const code = e.original?.code ?? e.parent?.code;
  const message = String(e.message ?? err).split('\n')[0] ?? '';
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/** The URL as it may be printed: a password never is. */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname}`;
  } catch {
    return 'the configured address';
  }
}

/**
 * Driver codes that say the database cannot take work right now (down, restarting, locked,
 * out of disk or connections), as opposed to a query it refused: SQLite's, PostgreSQL's
 * SQLSTATE classes 08 (connection), 53 (resources) and 57P (shut down), 55P03 (a lock held past
 * LOCK_TIMEOUT_MS), and the socket's.
 */
const UNAVAILABLE = /^(55P03|SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|PROTOCOL)|08\d\d\d|08P01|53\d\d\d|57P0[1-3]|E(CONNRESET|CONNREFUSED|PIPE|TIMEDOUT|HOSTUNREACH|NETUNREACH))/;

/**
 * A write the database answered with a refusal: no room (SQLite's SQLITE_FULL, PostgreSQL's
 * 53100 disk_full) or read-only (SQLITE_READONLY, 25006). It reads on meanwhile.
 */
const WRITE_REFUSED = /^(SQLITE_(FULL|READONLY)|53100|25006)$/;

export function isWriteRefusal(err: unknown): boolean {
  for (let e = err as { code?: unknown; parent?: unknown; original?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; depth++) {
    if (typeof e.code === 'string' && WRITE_REFUSED.test(e.code)) return true;
    e = (e.parent ?? e.original ?? e.cause) as typeof e;
  }
  return false;
}

/**
 * Whether `err` is the database (through Sequelize, or its driver's own error as the prepared
 * statements raise it) being down, busy, full or read-only: an outage's error, whose code and
 * message say all (the log keeps no stack for it).
 */
export function isDatabaseOutageError(err: unknown): boolean {
  if (isDatabaseUnavailable(err) || isWriteRefusal(err)) return true;
  // The drivers' own codes only (SQLite's, PostgreSQL's SQLSTATE): a socket's ECONNRESET may be
  // anything's, and is logged in full.
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(SQLITE_|\d\d[0-9A-Z]{3}$)/.test(code) && UNAVAILABLE.test(code);
}

/**
 * How many times a statement is sent in all when its connection turns out to be ended: each
 * failed attempt has used up one of the ended connections (the pool drops it), so past all of
 * them, one more runs on a new connection.
 */
const ENDED_CONNECTION_ATTEMPTS = POOL_MAX + 1;

/**
 * Runs `work` again, on another connection, when the one it ran on turns out to be ended by the
 * server: after a failover, a pooler restart or an operator's `pg_terminate_backend`, the pool
 * lends the connections the server has already closed until it hears of each. Readiness asked
 * at that moment said the database was down (with BREAKER_FAILURE_THRESHOLD=1 it opened the
 * breaker, and every read got 503), and the requests that came next failed one by one.
 * - Any statement, when PostgreSQL said it ended the connection (57P01 admin_shutdown, 57P02
 *   crash_shutdown): it ends a connection between statements, or aborts the one running, which
 *   then committed nothing. One statement on its own (autocommit) only: not a transaction's.
 * - `readsOnly`: also when the connection only closed or was reset, without that word (the server
 *   closed it before our statement was read, or crashed). A write might have committed then (a
 *   crash just after its commit), and is not sent twice: it fails, as any request in flight does.
 * - Any statement that was never sent: pg refused it on a client it knew to be broken, or the
 *   connection failed while it was being set up (`beforeSending`).
 */
export async function againOnEndedConnection<T>(work: () => Promise<T>, { readsOnly = false } = {}): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (err) {
      // A connection that could not be made (ConnectionError) is the database down, not one that went stale.
      const again = !(err instanceof ConnectionError) && (neverSent(err) || endedByServer(err) || (readsOnly && connectionClosed(err)));
      if (attempt >= ENDED_CONNECTION_ATTEMPTS || !again) throw err;
    }
  }
}

const failedBeforeSending = new WeakSet<object>();

/**
 * `err`, noted as the failure of a call that had sent nothing yet: the connection it was given
 * failed while being set up (Sequelize's own statements on a new connection, when the server
 * ends it as it becomes ready). Such a call is sent again like a read, whatever it writes.
 */
export function beforeSending(err: unknown): unknown {
  if (typeof err === 'object' && err !== null) failedBeforeSending.add(err);
  return err;
}

/** Whether the call that failed with `err` never reached the server, so that sending it again cannot write twice. */
function neverSent(err: unknown): boolean {
  if (typeof err === 'object' && err !== null && failedBeforeSending.has(err)) return true;
  // pg's refusal to send on a client it already knows is closed or broken (a pooled connection
  // whose socket failed after the pool lent it); as such, or through Sequelize as `parent`.
  const e = err as { message?: unknown; parent?: { message?: unknown } } | null;
  const message = e?.parent?.message ?? e?.message;
  return typeof message === 'string' && / and is not queryable$/.test(message);
}

/** PostgreSQL's own word that it ended the connection (57P01, 57P02), from pg or through Sequelize. */
function endedByServer(err: unknown): boolean {
  const e = err as { code?: unknown; parent?: { code?: unknown } } | null;
  const code = e?.parent?.code ?? e?.code;
  return code === '57P01' || code === '57P02';
}

function connectionClosed(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; parent?: { code?: unknown; message?: unknown } } | null;
  const code = e?.parent?.code ?? e?.code;
  const message = e?.parent?.message ?? e?.message;
  if (code === 'ECONNRESET' || code === 'EPIPE') return true;
  return typeof message === 'string' && /^(Connection terminated|Client has encountered a connection error)/.test(message);
}

/** Whether `err` is the database not answering (no connection, a timeout, a stall, a lost link): part of `isDatabaseOutageError`. */
function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof ConnectionError || err instanceof TimeoutError || err instanceof DatabaseStalledError) return true;
  if (!(err instanceof DatabaseError)) return isConnectionLost(err);
  const parent = err.parent as { code?: unknown } | undefined;
  if (typeof parent?.code === 'string' && UNAVAILABLE.test(parent.code)) return true;
  return isConnectionLost(err.parent);
}

/**
 * node-postgres reports a connection lost without a code: mid-query, or — asked of a pooled
 * connection whose socket failed just after the pool lent it — "not queryable" (seen as a 500
 * for a logout while the database link was cut, on a busy machine). Its own error, or through
 * Sequelize as `parent`.
 */
function isConnectionLost(err: unknown): boolean {
  const message = (err as { message?: unknown } | null)?.message;
  return typeof message === 'string' && /^(Connection terminated|Query read timeout|Client has encountered a connection error|Client was closed and is not queryable)/.test(message);
}
