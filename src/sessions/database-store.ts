/**
 * Sessions in a SQL table (SQLite or PostgreSQL), keyed by the hash of the id.
 *
 * The same table is the directory of every session, whatever backend holds it: the redis and
 * cookie backends keep a copy here (see mirrored-store.ts), with `backend` naming the holder.
 *
 * The per-request statements (load, create, save, touch, destroy, evict, and the mirror's
 * write-behind batch) run as prepared statements on the driver itself (database-statements.ts).
 * Everything off the request path stays on Sequelize.
 */
import DataLoader from 'dataloader';
import { Op, QueryTypes, type Model } from 'sequelize';
import type { BackendName } from '../config/config.js';
import type { Models, SessionRow } from '../db/models.js';
import { againOnEndedConnection, isWriteRefusal } from '../db/database.js';
import { jsonCodec, type DataCodec } from './codec.js';
import { BATCH_SIZES, byIdHash, compareKeys, isUniqueViolation, MAX_BATCH, MIRROR_CHUNKS, statementsFor, type RawRow, type Run, type Statements } from './database-statements.js';
import { SessionConflictError } from './errors.js';
import { hashSessionId, type SessionRecord } from './session.js';
import type { IndexedSessionStore } from './store.js';

/** An update waiting for its batch: which statement, and its row of parameters (id hash first). */
interface PendingUpdate {
  kind: 'saveRows' | 'touchRows';
  values: unknown[];
}

export class DatabaseStore implements IndexedSessionStore {
  readonly backend = 'database' as const;
  private readonly sql: Statements;
  /**
   * Every request reads its session, each from its own socket callback. Batched until the event
   * loop has run the callbacks of all the sockets that were ready (setImmediate), the reads of
   * those requests cost one statement: on SQLite one hop to sqlite3's thread pool and back
   * instead of one each (a context switch per hop when the process has one core), on PostgreSQL
   * one round trip. No cache: every load reads the database.
   */
  private readonly loader = new DataLoader<string, RawRow | undefined>((hashes) => this.loadRows(hashes), {
    cache: false,
    maxBatchSize: MAX_BATCH,
    batchScheduleFn: (callback) => setImmediate(callback),
  });

  /**
   * The saves and touches of requests that arrive together, gathered as the loads are, go out
   * as one statement and one commit instead of one each: on SQLite one hop to the thread pool
   * and one WAL append, with the index pages the rows share written once; on PostgreSQL one
   * round trip and one WAL flush (docs/performance.md, ninth round). Each save still applies
   * only at its expected version, and two updates of one session never share a statement: they
   * go out one after the other, in the order they came.
   */
  private readonly updates = new DataLoader<PendingUpdate, boolean | undefined>((updates) => this.updateInRounds(updates), {
    cache: false,
    batchScheduleFn: (callback) => setImmediate(callback),
  });

  /** PostgreSQL's gathered updates skip rows someone else holds (see `update`); SQLite's never skip. */
  private readonly skipsHeldRows: boolean;

  constructor(
    private readonly models: Models,
    private readonly codec: DataCodec = jsonCodec,
  ) {
    this.sql = statementsFor(models.sequelize);
    this.skipsHeldRows = models.sequelize.getDialect() === 'postgres';
  }

  async load(token: string): Promise<SessionRecord | undefined> {
    const row = await this.loader.load(hashSessionId(token));
    if (!row || Number(row.expires_at) <= Date.now()) return undefined;
    // Read through this store, the session is served from the database, even when the row is
    // another backend's copy (a fallback read, or a stale cookie): the caller moves it on, or
    // serves it from its holder (`heldBy`; set only then, so that the usual record keeps one shape).
    const record = this.fromRaw(row, token);
    if (record && row.backend !== this.backend) record.heldBy = row.backend as BackendName;
    return record;
  }

  /** The rows of `hashes` (in that order; undefined where there is none), in one statement. */
  private async loadRows(hashes: readonly string[]): Promise<(RawRow | undefined)[]> {
    const size = BATCH_SIZES.find((n) => n >= hashes.length) ?? MAX_BATCH;
    const values = Array.from({ length: size }, (_, k) => hashes[k] ?? hashes[0]);
    const rows = await this.sql.all<RawRow>(`load${size}`, values);
    const byHash = new Map(rows.map((row) => [row.id_hash, row]));
    return hashes.map((hash) => byHash.get(hash));
  }

  async create(record: SessionRecord): Promise<string> {
    await this.write('create', this.rowValues(record), record);
    return record.id;
  }

  /**
   * The row is also every session's directory entry, whatever backend holds it, and so the one
   * place where instances that disagree about the flag meet: of two moves of a session read at
   * the same version, only the first finds the row unchanged.
   */
  async moveIn(record: SessionRecord, readVersion: number): Promise<string | undefined> {
    return (await this.write('moveIn', [...this.rowValues(record), readVersion], record)) > 0 ? record.id : undefined;
  }

  /** Rows written by an upsert of `record`'s row. */
  private async write(statement: 'create' | 'moveIn', values: unknown[], record: SessionRecord): Promise<number> {
    try {
      return await this.sql.run(statement, values);
    } catch (err) {
      // After ON CONFLICT (id_hash), only the handle can clash: a row of this login's previous
      // id (a rotation), removed by the rotation but written back by another instance's late
      // copy batch. The handle is this id's now; without its row, a Redis outage would log it out.
      if (!isUniqueViolation(err)) throw err;
      await this.sql.run('releaseHandle', [record.handle, record.idHash]);
      return this.sql.run(statement, values);
    }
  }

  /**
   * The mirror's write-behind batch: a missing row is created, an existing
   * one is updated only while it still belongs to the record's backend and is not newer — so a
   * late batch never overwrites a session that has meanwhile moved here, or a newer save.
   */
  async upsertMany(unordered: SessionRecord[]): Promise<void> {
    if (unordered.length === 0) return;
    // A statement locks its rows in the order it meets them: two instances' batches over the same
    // sessions in opposite orders deadlocked on PostgreSQL. In one order (by key), one waits instead.
    const records = [...unordered].sort(byIdHash);
    // No transaction: each statement is conditional and idempotent, and on SQLite every request's
    // statements share this one connection, so a BEGIN here would sweep them into the batch.
    // A multi-row statement is atomic on its own, and commits once.
    await this.sql.batch(async (run) => {
      let next = 0;
      for (const size of MIRROR_CHUNKS) {
        for (; records.length - next >= size; next += size) {
          const chunk = records.slice(next, next + size);
          try {
            await run(`mirror${size}`, chunk.flatMap((record) => this.rowValues(record)));
          } catch (err) {
            // One row's clash fails the whole statement: the chunk again, row by row.
            if (!isUniqueViolation(err)) throw err;
            for (const record of chunk) await this.mirrorOne(run, record);
          }
        }
      }
      for (; next < records.length; next++) await this.mirrorOne(run, records[next]!);
    });
  }

  private async mirrorOne(run: Run, record: SessionRecord): Promise<void> {
    try {
      await run('mirror', this.rowValues(record));
    } catch (err) {
      // After ON CONFLICT (id_hash), only the handle can clash: the login has gone on under a
      // new id (rotation), and this late copy of the old id must not come back.
      if (!isUniqueViolation(err)) throw err;
    }
  }

  async save(record: SessionRecord, expectedVersion?: number): Promise<string | undefined> {
    if (await this.update({ kind: 'saveRows', values: [...this.rowValues(record), expectedVersion ?? null] })) return record.id;
    if (expectedVersion !== undefined && (await this.sql.get('exists', [record.idHash]))) throw new SessionConflictError(expectedVersion);
    return undefined;
  }

  /**
   * Whether the update was written. Sent with the updates of other requests of the moment, in
   * one statement; sent again on its own if that statement did not write it: on PostgreSQL the
   * gathered statement skips a row someone else holds (an operator's SELECT … FOR UPDATE left
   * open, another instance's write), which `saveRow`/`touchRow` wait for, up to `lock_timeout`.
   * Outside the gathered batch, so that only this request waits: the other requests of its
   * statement, and of the rounds after it, have had their answers. (A row not written because
   * its version moved or it is gone is not written the second time either.)
   */
  private async update(update: PendingUpdate): Promise<boolean> {
    const written = await this.updates.load(update);
    if (written !== undefined) return written;
    return (await this.sql.all(update.kind === 'saveRows' ? 'saveRow' : 'touchRow', update.values)).length > 0;
  }

  /**
   * Rounds of updates of distinct sessions: a session's second update waits for the round after
   * its first. For each, whether it was written; undefined if its statement may have skipped it.
   */
  private async updateInRounds(updates: readonly PendingUpdate[]): Promise<(boolean | undefined)[]> {
    const written: (boolean | undefined)[] = [];
    let pending = updates.map((update, index) => ({ update, index }));
    while (pending.length > 0) {
      const hashes = new Set<unknown>();
      const round: typeof pending = [];
      const later: typeof pending = [];
      for (const entry of pending) {
        const hash = entry.update.values[0];
        if (hashes.has(hash)) later.push(entry);
        else {
          hashes.add(hash);
          round.push(entry);
        }
      }
      await Promise.all(
        (['saveRows', 'touchRows'] as const).map(async (kind) => {
          const ofKind = round.filter((entry) => entry.update.kind === kind);
          const rows = await this.updateRows(kind, ofKind.map((entry) => entry.update.values));
          ofKind.forEach((entry, k) => (written[entry.index] = rows[k]!));
        }),
      );
      pending = later;
    }
    return written;
  }

  /**
   * Updates of distinct sessions, up to 64 per statement; for each, true if its row was written,
   * false if not, undefined if not on PostgreSQL: skipped there if someone else held it
   * (database-statements.ts, updateFromValues), or its version moved, or it is gone.
   */
  private async updateRows(kind: PendingUpdate['kind'], rows: ReadonlyArray<unknown[]>): Promise<(boolean | undefined)[]> {
    const written = new Set<unknown>();
    const statements: Promise<void>[] = [];
    // In key order, as upsertMany's rows, so that statements over the same sessions lock them alike.
    const ordered = rows.length > 1 ? [...rows].sort((a, b) => compareKeys(a[0], b[0])) : rows;
    for (let next = 0; next < ordered.length; next += MAX_BATCH) {
      const chunk = ordered.slice(next, next + MAX_BATCH);
      statements.push(this.updateChunk(kind, chunk).then((hashes) => hashes.forEach((hash) => written.add(hash))));
    }
    await Promise.all(statements);
    return rows.map((row) => (written.has(row[0]) ? true : this.skipsHeldRows ? undefined : false));
  }

  /** One statement for the chunk's rows; the id hashes it wrote. */
  private async updateChunk(kind: PendingUpdate['kind'], chunk: ReadonlyArray<unknown[]>): Promise<string[]> {
    // The smallest statement that holds the chunk; its other rows repeat the first one, which
    // changes nothing: a row is updated once per statement, however many rows name it.
    const size = BATCH_SIZES.find((n) => n >= chunk.length)!;
    const values = Array.from({ length: size }, (_, k) => chunk[k] ?? chunk[0]!).flat();
    return (await this.sql.all<{ id_hash: string }>(`${kind}${size}`, values)).map((row) => row.id_hash);
  }

  async touch(record: SessionRecord): Promise<string | undefined> {
    return (await this.update({ kind: 'touchRows', values: [record.idHash, record.lastActivity, record.expiresAt] })) ? record.id : undefined;
  }

  async destroy(record: SessionRecord): Promise<void> {
    await this.sql.run('destroy', [record.idHash]);
  }

  /**
   * Removes the row only while it still belongs to this backend (a destination that mirrors here
   * has already taken it over) and is still the version that was moved.
   */
  async evict(record: SessionRecord): Promise<void> {
    await this.sql.run('evict', [record.idHash, this.backend, record.version]);
  }

  /**
   * A move's directory entry given back to where the session was, after the move's target
   * failed to take it (MirroredStore.moveIn writes the entry first): the entry says `from` again,
   * at the version the move read, so the move can go to the fallback instead. Only while the
   * entry is still that move's (`to` at `movedVersion`, the version the move wrote). The data the
   * move wrote stays: it is the session's, with the moving request's changes.
   */
  async giveBack(idHash: string, to: BackendName, from: BackendName, readVersion: number, movedVersion: number): Promise<void> {
    await this.sql.run('giveBack', [idHash, to, movedVersion, from, readVersion]);
  }

  /**
   * The row, another backend's copy, now names the database as the session's holder: it was
   * served from here while that backend was down, and its cookie now points here. A late
   * write-behind batch of that backend then leaves it alone (it updates only its own rows).
   */
  async claim(record: SessionRecord): Promise<void> {
    // At `record`'s version only: a claim that came late, after a move took the row elsewhere (a
    // request that saved here, then a flip's move into Redis, before it claimed), named the
    // database holder of a session Redis held, and both went on taking changes.
    await this.sql.run('claim', [record.idHash, this.backend, record.version]);
  }

  async listByUser(userId: number): Promise<SessionRecord[]> {
    const rows = await againOnEndedConnection(
      () => this.models.SessionRow.findAll({ where: { userId, expiresAt: { [Op.gt]: Date.now() } }, order: [['createdAt', 'ASC']] }),
      { readsOnly: true },
    );
    return rows.flatMap((row) => this.toRecord(row, '') ?? []);
  }

  /**
   * Live sessions held by `backend`, in id-hash order after `afterHash` (keyset pagination:
   * each page costs the same however far the scan has gone). Records carry no id.
   */
  async scan(backend: BackendName, afterHash: string, limit: number): Promise<SessionRecord[]> {
    const rows = await this.models.SessionRow.findAll({
      where: { backend, idHash: { [Op.gt]: afterHash }, expiresAt: { [Op.gt]: Date.now() } },
      order: [['idHash', 'ASC']],
      limit,
    });
    return rows.flatMap((row) => this.toRecord(row, '') ?? []);
  }

  /** The live row of `idHash`, as the directory has it (its backend, no id): for operator tools, and for a move that found the session changed (SessionBackends.current). */
  async loadByHash(idHash: string): Promise<SessionRecord | undefined> {
    const row = await againOnEndedConnection(() => this.models.SessionRow.findOne({ where: { idHash, expiresAt: { [Op.gt]: Date.now() } } }), {
      readsOnly: true,
    });
    return row ? this.toRecord(row, '') : undefined;
  }

  /** Unexpired sessions of any backend issued in [from, to): what a revoke-all at `to` ends, after one at `from`. */
  async countIssuedBetween(from: number, to: number): Promise<number> {
    return this.models.SessionRow.count({ where: { expiresAt: { [Op.gt]: Date.now() }, issuedAt: { [Op.gte]: from, [Op.lt]: to } } });
  }

  async countHeldBy(backend: BackendName): Promise<number> {
    return this.models.SessionRow.count({ where: { backend, expiresAt: { [Op.gt]: Date.now() } } });
  }

  /** Deletes up to `limit` rows expired at `now`; returns how many. Small batches keep SQLite's writer lock short. */
  deleteExpired(limit = 500, now = Date.now()): Promise<number> {
    return this.sql.run('deleteExpired', [now, limit]);
  }

  async ping(): Promise<void> {
    await againOnEndedConnection(() => this.models.sequelize.query('SELECT 1'), { readsOnly: true });
  }

  refusesWrite(err: unknown): boolean {
    return isWriteRefusal(err);
  }

  /**
   * Up when the database takes writes. A PostgreSQL that answers reads and refuses every write
   * (a standby after a failover, `default_transaction_read_only`) failed every session write
   * with 503 while this said up: the breaker stayed closed (the reads succeed between the
   * failures), and `/readyz` and `session_store_up` said all was well.
   */
  async writable(): Promise<void> {
    if (this.models.sequelize.getDialect() !== 'postgres') {
      // A write, as every request that saves makes one: SQLite reads on while its disk is full
      // (SQLITE_FULL) or its file is read-only.
      await this.models.sequelize.query(
        `INSERT INTO settings (name, value) VALUES ('probe', :at) ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
        { replacements: { at: new Date().toISOString() } },
      );
      return;
    }
    const [row] = await againOnEndedConnection(() =>
      this.models.sequelize.query<{ standby: boolean; readOnly: string }>(
        `SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS "readOnly"`,
        { type: QueryTypes.SELECT },
      ),
      { readsOnly: true },
    );
    if (row?.standby) throw new Error('PostgreSQL is a standby (in recovery): it takes no writes');
    if (row?.readOnly === 'on') throw new Error('PostgreSQL is read-only (default_transaction_read_only): it takes no writes');
  }

  /**
   * Releases what this store holds on the connection (SQLite's prepared statements). The
   * connection itself belongs to the application, which closes it; a later call prepares again.
   */
  async close(): Promise<void> {
    await this.sql.close();
  }

  /** The parameters ?1…?13 of every statement that writes a whole row. */
  private rowValues(r: SessionRecord): unknown[] {
    return [
      r.idHash,
      r.handle,
      r.userId,
      r.backend,
      this.codec.encode(r.data),
      r.createdAt,
      r.issuedAt,
      r.lastActivity,
      r.expiresAt,
      r.absoluteExpiresAt,
      r.ip.slice(0, 64),
      r.userAgent.slice(0, 512),
      r.version,
    ];
  }

  /** BIGINT comes back from PostgreSQL as a string. */
  /** A row as the driver returns it (the request path's statements), served from this store. */
  private fromRaw(r: RawRow, id: string): SessionRecord | undefined {
    const data = this.codec.decode(r.data);
    if (!data) return undefined;
    return {
      id,
      idHash: r.id_hash,
      handle: r.handle,
      userId: Number(r.user_id),
      backend: this.backend,
      data,
      createdAt: Number(r.created_at),
      issuedAt: Number(r.issued_at),
      lastActivity: Number(r.last_activity),
      expiresAt: Number(r.expires_at),
      absoluteExpiresAt: Number(r.absolute_expires_at),
      ip: r.ip,
      userAgent: r.user_agent,
      version: Number(r.version),
    };
  }

  /** A row as Sequelize returns it (listings, operator tools), with the backend it names. */
  private toRecord(row: Omit<SessionRow, keyof Model>, id: string): SessionRecord | undefined {
    const data = this.codec.decode(row.data);
    if (!data) return undefined;
    return {
      id,
      idHash: row.idHash,
      handle: row.handle,
      userId: row.userId,
      backend: row.backend as BackendName,
      data,
      createdAt: row.createdAt,
      issuedAt: row.issuedAt,
      lastActivity: row.lastActivity,
      expiresAt: row.expiresAt,
      absoluteExpiresAt: row.absoluteExpiresAt,
      ip: row.ip,
      userAgent: row.userAgent,
      version: row.version,
    };
  }
}
