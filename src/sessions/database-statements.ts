/**
 * The sessions table's per-request SQL, and the prepared statements that run it on the driver
 * itself (sqlite3 or pg), below Sequelize: through Sequelize each statement cost several times
 * the query (SQL building, validation, a stack captured per query — docs/performance.md, item 1).
 * database-store.ts decides what to run; this file is how it runs on each database.
 */
import type { Client as PgClient, QueryResult } from 'pg';
import type { Sequelize } from 'sequelize';
import { againOnEndedConnection, beforeSending } from '../db/database.js';
import type { Database as SqliteDatabase, Statement as SqliteStatement } from 'sqlite3';
import type { SessionRecord } from './session.js';

const COLUMNS = 'id_hash, handle, user_id, backend, data, created_at, issued_at, last_activity, expires_at, absolute_expires_at, ip, user_agent, version';
const INSERT = `INSERT INTO sessions (${COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)`;

// The Redis and cookie formats do not carry the IP and User-Agent, so their copies arrive with
// '': the directory keeps the ones it has (from the login) rather than forget them.
const UPSERT_SET =
  'handle = excluded.handle, user_id = excluded.user_id, backend = excluded.backend, data = excluded.data, ' +
  'created_at = excluded.created_at, issued_at = excluded.issued_at, last_activity = excluded.last_activity, ' +
  'expires_at = excluded.expires_at, absolute_expires_at = excluded.absolute_expires_at, ' +
  "ip = COALESCE(NULLIF(excluded.ip, ''), sessions.ip), user_agent = COALESCE(NULLIF(excluded.user_agent, ''), sessions.user_agent), " +
  'version = excluded.version';
const MIRROR_CONFLICT = `ON CONFLICT (id_hash) DO UPDATE SET ${UPSERT_SET} WHERE sessions.backend = excluded.backend AND sessions.version <= excluded.version`;

/** Rows per multi-row statement of the mirror's batch, largest first (and 1: `mirror`). */
export const MIRROR_CHUNKS = [64, 16, 4] as const;

export function compareKeys(a: unknown, b: unknown): number {
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}
export const byIdHash = (a: SessionRecord, b: SessionRecord) => compareKeys(a.idHash, b.idHash);

/**
 * Loads, saves and touches waiting at the same moment go to the database as one statement of
 * the smallest of these sizes that holds them: an `IN (…)` of that many id hashes, or an UPDATE
 * from that many VALUES rows (14 parameters a row for a save), the unused places repeating the first.
 */
export const BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64] as const;
export const MAX_BATCH = 64;

/** INSERT of `rows` whole rows: row k takes ?(13k+1)…?(13k+13), as `rowValues` lays them out. */
function insertRows(rows: number): string {
  const width = COLUMNS.split(',').length;
  const tuples = Array.from({ length: rows }, (_, k) => `(${Array.from({ length: width }, (_, c) => `?${k * width + c + 1}`).join(', ')})`);
  return `INSERT INTO sessions (${COLUMNS}) VALUES ${tuples.join(', ')}`;
}

/**
 * UPDATE of `rows` sessions in one statement, from a VALUES list `given` whose columns are
 * `columns` (name and SQL type, `id_hash` first): row k's values at ?(wk+1)…?(wk+w). RETURNING
 * names the rows written; one that `condition` refuses, or that is gone, is not. The first
 * row's parameters carry their types: PostgreSQL types a VALUES list from its first row (bare
 * parameters would be text); on SQLite the columns' affinity does the same either way.
 */
function updateFromValues(columns: ReadonlyArray<readonly [string, string]>, set: string, condition: string, rows: number, lockInKeyOrder: boolean): string {
  const width = columns.length;
  const parameter = (k: number, c: number) => (k === 0 ? `CAST(?${c + 1} AS ${columns[c]![1]})` : `?${k * width + c + 1}`);
  const tuples = Array.from({ length: rows }, (_, k) => `(${columns.map((_, c) => parameter(k, c)).join(', ')})`);
  const given = `given (${columns.map(([name]) => name).join(', ')}) AS (VALUES ${tuples.join(', ')})`;
  const where = `sessions.id_hash = given.id_hash${condition ? ` AND ${condition}` : ''}`;
  if (!lockInKeyOrder) return `WITH ${given} UPDATE sessions SET ${set} FROM given WHERE ${where} RETURNING sessions.id_hash`;
  // PostgreSQL: an UPDATE … FROM locks rows in the order its plan meets them — table order, for
  // a scan of a small table — while the write-behind batch (an INSERT) locks them in key order:
  // two instances' statements over the same sessions deadlocked. Locked first, in key order
  // (byte order, as the batch sorts), and never waited for: a row someone else holds (another
  // statement's, or an operator's SELECT … FOR UPDATE left open) is skipped, and not written,
  // and the caller sends it again on its own (DatabaseStore.updateRows). Waited for here, one
  // held row held up every session of the statement past its request's deadline.
  const locked = 'locked AS MATERIALIZED (SELECT id_hash FROM sessions WHERE id_hash IN (SELECT id_hash FROM given) ORDER BY id_hash COLLATE "C" FOR UPDATE SKIP LOCKED)';
  return `WITH ${given}, ${locked} UPDATE sessions SET ${set} FROM given WHERE ${where} AND sessions.id_hash IN (SELECT id_hash FROM locked) RETURNING sessions.id_hash`;
}

/**
 * Up to ?2 rows expired at ?1, oldest first (so that PostgreSQL walks the expires_at index; without
 * the order its planner may scan the whole table for every batch: docs/scale.md, finding 1), and
 * still expired when deleted: a session touched meanwhile stays.
 */
const expiredBatch = (lock: string) => {
  const batch = `SELECT id_hash FROM sessions WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2${lock}`;
  // PostgreSQL: as an array, so that the DELETE finds the rows by key. As `IN (SELECT …)` its
  // planner took the expiry condition to the index instead, reading every expired row per batch.
  return `DELETE FROM sessions WHERE ${lock ? `id_hash = ANY (ARRAY(${batch}))` : `id_hash IN (${batch})`} AND expires_at <= ?1`;
};

const COLUMN_TYPES: Record<string, string> = { user_id: 'INTEGER', version: 'INTEGER', data: 'TEXT', created_at: 'BIGINT', issued_at: 'BIGINT', last_activity: 'BIGINT', expires_at: 'BIGINT', absolute_expires_at: 'BIGINT' };
const typed = (name: string) => [name, COLUMN_TYPES[name] ?? 'TEXT'] as const;

/** A save: the whole row as `rowValues` lays it out, and the version the row must still be at (NULL: any). */
const saveRows = (rows: number, lockInKeyOrder = false) =>
  updateFromValues(
    [...COLUMNS.split(', ').map(typed), ['expected_version', 'INTEGER']],
    COLUMNS.split(', ')
      .filter((column) => column !== 'id_hash')
      // The Redis and cookie formats carry no IP and User-Agent: as in UPSERT_SET, keep the row's.
      .map((column) => (column === 'ip' || column === 'user_agent' ? `${column} = COALESCE(NULLIF(given.${column}, ''), sessions.${column})` : `${column} = given.${column}`))
      .join(', '),
    '(given.expected_version IS NULL OR sessions.version = given.expected_version)',
    rows,
    lockInKeyOrder,
  );

/** A touch: the idle expiry moves, nothing else changes. */
const touchRows = (rows: number, lockInKeyOrder = false) =>
  updateFromValues(['id_hash', 'last_activity', 'expires_at'].map(typed), 'last_activity = given.last_activity, expires_at = given.expires_at', '', rows, lockInKeyOrder);

function loadRows(ids: number): string {
  return `SELECT ${COLUMNS} FROM sessions WHERE id_hash IN (${Array.from({ length: ids }, (_, k) => `?${k + 1}`).join(', ')})`;
}

/**
 * The hot-path statements. Numbered parameters, so that every statement writing a whole row
 * takes the same values (`rowValues`): ?1 is the id hash, ?1…?13 the columns in COLUMNS order.
 */
const SQL = {
  load1: `SELECT ${COLUMNS} FROM sessions WHERE id_hash = ?1`,
  load2: loadRows(2),
  load4: loadRows(4),
  load8: loadRows(8),
  load16: loadRows(16),
  load32: loadRows(32),
  load64: loadRows(64),
  exists: 'SELECT 1 AS found FROM sessions WHERE id_hash = ?1',
  create: `${INSERT} ON CONFLICT (id_hash) DO UPDATE SET ${UPSERT_SET}`,
  // A move's write (moveIn): the whole row, unless it has changed since the move read the session (?14).
  moveIn: `${INSERT} ON CONFLICT (id_hash) DO UPDATE SET ${UPSERT_SET} WHERE sessions.version <= ?14`,
  // Never over a row another backend has claimed meanwhile (a migration), nor over a newer save.
  mirror: `${INSERT} ${MIRROR_CONFLICT}`,
  // The batch in one statement per chunk: one commit (one WAL append on SQLite, one round trip on
  // PostgreSQL) for up to 64 rows instead of one per row.
  mirror4: `${insertRows(4)} ${MIRROR_CONFLICT}`,
  mirror16: `${insertRows(16)} ${MIRROR_CONFLICT}`,
  mirror64: `${insertRows(64)} ${MIRROR_CONFLICT}`,
  // The saves and touches of requests that arrive together (see DatabaseStore.updates).
  saveRows1: saveRows(1),
  saveRows2: saveRows(2),
  saveRows4: saveRows(4),
  saveRows8: saveRows(8),
  saveRows16: saveRows(16),
  saveRows32: saveRows(32),
  saveRows64: saveRows(64),
  touchRows1: touchRows(1),
  touchRows2: touchRows(2),
  touchRows4: touchRows(4),
  touchRows8: touchRows(8),
  touchRows16: touchRows(16),
  touchRows32: touchRows(32),
  touchRows64: touchRows(64),
  // One session's save or touch that waits for its row if someone else holds it (on PostgreSQL
  // the gathered statements above skip such a row; DatabaseStore.update sends it again with these).
  saveRow: saveRows(1),
  touchRow: touchRows(1),
  destroy: 'DELETE FROM sessions WHERE id_hash = ?1',
  releaseHandle: 'DELETE FROM sessions WHERE handle = ?1 AND id_hash <> ?2',
  evict: 'DELETE FROM sessions WHERE id_hash = ?1 AND backend = ?2 AND version = ?3',
  // Only at the version the claimer wrote or read (?3): a row moved on since (a move into Redis
  // after the save) is no longer the copy it served (DatabaseStore.claim).
  claim: 'UPDATE sessions SET backend = ?2 WHERE id_hash = ?1 AND backend <> ?2 AND version = ?3',
  // A move's entry given back (DatabaseStore.giveBack): only while it is still that move's.
  giveBack: 'UPDATE sessions SET backend = ?4, version = ?5 WHERE id_hash = ?1 AND backend = ?2 AND version = ?3',
  deleteExpired: expiredBatch(''),
} as const;
export type StatementName = keyof typeof SQL;
const STATEMENT_NAMES = Object.keys(SQL) as StatementName[];

export interface RawRow {
  id_hash: string;
  handle: string;
  user_id: number;
  backend: string;
  data: string;
  created_at: number | string;
  issued_at: number | string;
  last_activity: number | string;
  expires_at: number | string;
  absolute_expires_at: number | string;
  ip: string;
  user_agent: string;
  version: number;
}

export type Run = (name: StatementName, values: unknown[]) => Promise<number>;

/** The hot-path statements on one driver. */
export interface Statements {
  /** The first row, if any. */
  get<T>(name: StatementName, values: unknown[]): Promise<T | undefined>;
  all<T>(name: StatementName, values: unknown[]): Promise<T[]>;
  /** Rows changed. */
  run: Run;
  /** Several statements in a row, on one connection where the driver pools them. */
  batch(work: (run: Run) => Promise<void>): Promise<void>;
  close(): Promise<void>;
}


export function statementsFor(sequelize: Sequelize): Statements {
  const dialect = sequelize.getDialect();
  if (dialect === 'sqlite') return new SqliteStatements(sequelize);
  if (dialect === 'postgres') return new PostgresStatements(sequelize);
  throw new Error(`DatabaseStore runs on SQLite or PostgreSQL, not ${dialect}`);
}

export function isUniqueViolation(err: unknown): boolean {
  const { code, message } = err as { code?: unknown; message?: unknown };
  // sqlite3 gives only the primary code; its message names the kind of constraint.
  return code === '23505' || (code === 'SQLITE_CONSTRAINT' && typeof message === 'string' && message.includes('UNIQUE'));
}

/**
 * A statement that failed (SQLITE_BUSY: another process held the database longer than the busy
 * timeout) is reset before the failure is reported. sqlite3 leaves it active otherwise, and
 * while any statement is active the connection's transaction stays open: every later write of
 * the process — Sequelize's too, on this one connection — went into it, unseen by other
 * processes and lost at restart.
 */
function failed(statement: SqliteStatement, err: Error, reject: (err: Error) => void): void {
  statement.reset(() => reject(err));
}

/**
 * SQLite: statements prepared once on the connection Sequelize itself uses (one per file), so
 * they share its settings (WAL, busy timeout, synchronous) and never contend with it for the
 * writer lock as a second connection would.
 */
class SqliteStatements implements Statements {
  private prepared: PreparedSet | undefined;
  private preparing: Promise<PreparedSet> | undefined;

  constructor(private readonly sequelize: Sequelize) {}

  async get<T>(name: StatementName, values: unknown[]): Promise<T | undefined> {
    // `all`, not `get`: sqlite3's `get` leaves the statement mid-step, holding a read
    // transaction open on the connection (a stale snapshot, and a WAL that cannot be checkpointed)
    // until the statement is next used.
    return (await this.all<T>(name, values))[0];
  }

  async all<T>(name: StatementName, values: unknown[]): Promise<T[]> {
    const statement = (this.prepared?.live ? this.prepared : await this.prepare()).statements[name];
    return new Promise((resolve, reject) => {
      statement.all<T>(values, (err, rows) => (err ? failed(statement, err, reject) : resolve(rows)));
    });
  }

  async run(name: StatementName, values: unknown[]): Promise<number> {
    const statement = (this.prepared?.live ? this.prepared : await this.prepare()).statements[name];
    return new Promise((resolve, reject) => {
      statement.run(values, function (err) {
        if (err) failed(statement, err, reject);
        else resolve(this.changes);
      });
    });
  }

  batch(work: (run: Run) => Promise<void>): Promise<void> {
    return work((name, values) => this.run(name, values));
  }

  async close(): Promise<void> {
    const preparing = this.preparing;
    const prepared = this.prepared;
    this.prepared = undefined;
    await Promise.all([prepared?.finalize(), preparing?.then((set) => set.finalize(), () => undefined)]);
  }

  private prepare(): Promise<PreparedSet> {
    this.preparing ??= (async () => {
      try {
        // Without a uuid the sqlite dialect hands out its 'default' connection, the one
        // openDatabase set up (the type only satisfies Sequelize's declaration).
        const db = (await this.sequelize.connectionManager.getConnection({ type: 'write' })) as SqliteDatabase;
        const set = await PreparedSet.prepare(db);
        this.prepared = set;
        return set;
      } finally {
        this.preparing = undefined;
      }
    })();
    return this.preparing;
  }
}

/** One preparation of every statement on one connection; finalized together. */
class PreparedSet {
  live = true;
  private finalizing: Promise<void> | undefined;

  private constructor(
    private readonly db: SqliteDatabase,
    readonly statements: Record<StatementName, SqliteStatement>,
  ) {}

  static async prepare(db: SqliteDatabase): Promise<PreparedSet> {
    const results = await Promise.allSettled(
      STATEMENT_NAMES.map(
        (name) =>
          new Promise<SqliteStatement>((resolve, reject) => {
            const statement = db.prepare(SQL[name], (err) => (err ? reject(err) : resolve(statement)));
          }),
      ),
    );
    const ready = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(ready.map(finalize));
      throw failed.reason;
    }
    const set = new PreparedSet(db, Object.fromEntries(STATEMENT_NAMES.map((name, i) => [name, ready[i]])) as Record<StatementName, SqliteStatement>);
    openSets(db).add(set);
    return set;
  }

  /** Waits for the statements' queued runs, then finalizes them. Safe to call twice. */
  finalize(): Promise<void> {
    this.live = false;
    this.finalizing ??= Promise.all(Object.values(this.statements).map(finalize)).then(() => {
      openSets(this.db).delete(this);
    });
    return this.finalizing;
  }
}

function finalize(statement: SqliteStatement): Promise<void> {
  // The only error finalize reports is "already finalized".
  return new Promise((resolve) => statement.finalize(() => resolve()));
}

const setsByConnection = new WeakMap<SqliteDatabase, Set<PreparedSet>>();

/**
 * The sets prepared on a connection, finalized before it closes: the application closes
 * Sequelize (sequelize.close()), not its stores, and sqlite3 refuses to close a connection that
 * still has statements (SQLITE_BUSY) — so the connection's own close waits for them.
 */
function openSets(db: SqliteDatabase): Set<PreparedSet> {
  let sets = setsByConnection.get(db);
  if (!sets) {
    const open = (sets = new Set());
    const close = db.close.bind(db);
    const finalizeAll = async () => {
      // Again while any remain: a set may have been prepared while the others were finalized.
      while (open.size > 0) await Promise.allSettled([...open].map((set) => set.finalize()));
    };
    db.close = (callback) => {
      void finalizeAll().then(() => close(callback));
    };
    setsByConnection.set(db, sets);
  }
  return sets;
}

/**
 * PostgreSQL: named prepared statements on a connection borrowed from Sequelize's own pool for
 * the duration of a call. Not a pg.Pool of our own: that would need closing (the application
 * closes Sequelize, not its stores), an error listener for connections the server ends, and
 * would double the connections held. pg prepares a name once per connection and remembers it,
 * and a connection that fails is dropped from the pool by Sequelize's error handler.
 */
class PostgresStatements implements Statements {
  constructor(private readonly sequelize: Sequelize) {}

  async get<T>(name: StatementName, values: unknown[]): Promise<T | undefined> {
    return (await this.all<T>(name, values))[0];
  }

  async all<T>(name: StatementName, values: unknown[]): Promise<T[]> {
    // The batched saves and touches come here too (UPDATE … RETURNING): a connection that closed
    // under them may have committed them, so only the loads are sent again on any closed connection.
    const readsOnly = name.startsWith('load') || name === 'exists';
    const result = await againOnEndedConnection(() => this.withClient((client) => query<T>(client, name, values)), { readsOnly });
    return result.rows;
  }

  async run(name: StatementName, values: unknown[]): Promise<number> {
    const result = await againOnEndedConnection(() => this.withClient((client) => query(client, name, values)));
    return result.rowCount ?? 0;
  }

  /** Never sent again on an ended connection: `work`'s statements before the failure committed. */
  batch(work: (run: Run) => Promise<void>): Promise<void> {
    return this.withClient((client) => work(async (name, values) => (await query(client, name, values)).rowCount ?? 0));
  }

  async close(): Promise<void> {
    // Nothing held between calls; prepared statements end with their connections.
  }

  private async withClient<T>(work: (client: PgClient) => Promise<T>): Promise<T> {
    const manager = this.sequelize.connectionManager;
    // 'write': the primary even if replicas are ever configured; a session just written must read back.
    const client = (await manager.getConnection({ type: 'write' }).catch((err: unknown) => Promise.reject(beforeSending(err)))) as PgClient;
    try {
      return await work(client);
    } finally {
      manager.releaseConnection(client);
    }
  }
}

/** The gathered updates, locking their rows in key order and skipping those held (see updateFromValues). */
const PG_ONLY: Partial<Record<StatementName, string>> = {
  ...Object.fromEntries(
    BATCH_SIZES.flatMap((size) => [
      [`saveRows${size}`, saveRows(size, true)],
      [`touchRows${size}`, touchRows(size, true)],
    ]),
  ),
  // The cleanup never waits for a row a request holds (nor, waiting, holds others in another
  // order than the requests' key order: a deadlock): a row being written now is left for later.
  deleteExpired: expiredBatch(' FOR UPDATE SKIP LOCKED'),
};
const PG_SQL = Object.fromEntries(STATEMENT_NAMES.map((name) => [name, (PG_ONLY[name] ?? SQL[name]).replace(/\?(\d+)/g, '$$$1')])) as Record<StatementName, string>;

function query<T>(client: PgClient, name: StatementName, values: unknown[]): Promise<QueryResult<T & object>> {
  return client.query<T & object>({ name: `switchboard_sessions_${name}`, text: PG_SQL[name], values });
}
