/**
 * Sessions in a SQL table (Sequelize: SQLite or PostgreSQL), keyed by the hash of the id.
 *
 * The same table is the directory of every session, whatever backend holds it: the redis and
 * cookie backends keep a copy here (see mirrored-store.ts), with `backend` naming the holder.
 */
import { Op, QueryTypes, type Model } from 'sequelize';
import type { BackendName } from '../config/config.js';
import type { Models, SessionRow } from '../db/models.js';
import { jsonCodec, type DataCodec } from './codec.js';
import { SessionConflictError } from './errors.js';
import { hashSessionId, type SessionRecord } from './session.js';
import type { IndexedSessionStore } from './store.js';

const LOAD_SQL =
  'SELECT id_hash, handle, user_id, backend, data, created_at, issued_at, last_activity, expires_at, absolute_expires_at, ip, user_agent, version FROM sessions WHERE id_hash = ?';

interface RawRow {
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

/** A raw row in the shape of the model (BIGINT comes back as a string from PostgreSQL). */
function fromRaw(r: RawRow): Omit<SessionRow, keyof Model> {
  return {
    idHash: r.id_hash,
    handle: r.handle,
    userId: Number(r.user_id),
    backend: r.backend,
    data: r.data,
    createdAt: Number(r.created_at),
    issuedAt: Number(r.issued_at),
    lastActivity: Number(r.last_activity),
    expiresAt: Number(r.expires_at),
    absoluteExpiresAt: Number(r.absolute_expires_at),
    ip: r.ip,
    userAgent: r.user_agent,
    version: Number(r.version),
  } as Omit<SessionRow, keyof Model>;
}

export class DatabaseStore implements IndexedSessionStore {
  readonly backend = 'database' as const;

  constructor(
    private readonly models: Models,
    private readonly codec: DataCodec = jsonCodec,
  ) {}

  async load(token: string): Promise<SessionRecord | undefined> {
    // The hot path: one raw SELECT, no model instance (Sequelize's instances cost more than the query).
    const [raw] = await this.models.sequelize.query<RawRow>(LOAD_SQL, { replacements: [hashSessionId(token)], type: QueryTypes.SELECT, raw: true });
    const row = raw && fromRaw(raw);
    if (!row || row.expiresAt <= Date.now()) return undefined;
    // Read through this store, the session is served from the database, even when the row is
    // another backend's copy (a fallback read, or a stale cookie): the caller moves it on.
    const record = this.toRecord(row, token);
    return record && { ...record, backend: this.backend };
  }

  async create(record: SessionRecord): Promise<string> {
    await this.models.SessionRow.upsert(this.toRow(record));
    return record.id;
  }

  /**
   * The mirror's write-behind batch: a missing row is created, an existing
   * one is updated only while it still belongs to the record's backend and is not newer — so a
   * late batch never overwrites a session that has meanwhile moved here, or a newer save.
   */
  async upsertMany(records: SessionRecord[]): Promise<void> {
    if (records.length === 0) return;
    const rows = records.map((r) => this.toRow(r));
    // No transaction: each statement is conditional and idempotent, and on SQLite Sequelize opens
    // a transaction on a connection of its own, without the busy timeout the main one has.
    await this.models.SessionRow.bulkCreate(rows, { ignoreDuplicates: true });
    for (const { idHash, ...changes } of rows) {
      await this.models.SessionRow.update(changes, { where: { idHash, backend: changes.backend, version: { [Op.lte]: changes.version } } });
    }
  }

  async save(record: SessionRecord, expectedVersion?: number): Promise<string | undefined> {
    const { idHash, ...changes } = this.toRow(record);
    const where = expectedVersion === undefined ? { idHash } : { idHash, version: expectedVersion };
    const [count] = await this.models.SessionRow.update(changes, { where });
    if (count > 0) return record.id;
    if (expectedVersion !== undefined && (await this.models.SessionRow.count({ where: { idHash } })) > 0) {
      throw new SessionConflictError(expectedVersion);
    }
    return undefined;
  }

  async touch(record: SessionRecord): Promise<string | undefined> {
    const [count] = await this.models.SessionRow.update(
      { lastActivity: record.lastActivity, expiresAt: record.expiresAt },
      { where: { idHash: record.idHash } },
    );
    return count > 0 ? record.id : undefined;
  }

  async destroy(record: SessionRecord): Promise<void> {
    await this.models.SessionRow.destroy({ where: { idHash: record.idHash } });
  }

  /** Removes the row only while it still belongs to this backend: a destination that mirrors here has already claimed it. */
  async evict(record: SessionRecord): Promise<void> {
    await this.models.SessionRow.destroy({ where: { idHash: record.idHash, backend: this.backend } });
  }

  async listByUser(userId: number): Promise<SessionRecord[]> {
    const rows = await this.models.SessionRow.findAll({
      where: { userId, expiresAt: { [Op.gt]: Date.now() } },
      order: [['createdAt', 'ASC']],
    });
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

  async countHeldBy(backend: BackendName): Promise<number> {
    return this.models.SessionRow.count({ where: { backend, expiresAt: { [Op.gt]: Date.now() } } });
  }

  /** Deletes up to `limit` expired rows; returns how many. Small batches keep SQLite's writer lock short. */
  async deleteExpired(limit = 500): Promise<number> {
    const rows = await this.models.SessionRow.findAll({
      attributes: ['idHash'],
      where: { expiresAt: { [Op.lte]: Date.now() } },
      // Ordered so PostgreSQL walks the expires_at index (docs/scale.md, finding 1): without it the
      // planner may scan the whole table for every batch.
      order: [['expiresAt', 'ASC']],
      limit,
    });
    if (rows.length === 0) return 0;
    // Still expired at delete time: a session touched since the SELECT stays.
    return this.models.SessionRow.destroy({ where: { idHash: rows.map((r) => r.idHash), expiresAt: { [Op.lte]: Date.now() } } });
  }

  async ping(): Promise<void> {
    await this.models.sequelize.query('SELECT 1');
  }

  async close(): Promise<void> {
    // The connection belongs to the application, which closes it.
  }

  private toRow(r: SessionRecord) {
    return {
      idHash: r.idHash,
      handle: r.handle,
      userId: r.userId,
      backend: r.backend,
      data: this.codec.encode(r.data),
      createdAt: r.createdAt,
      issuedAt: r.issuedAt,
      lastActivity: r.lastActivity,
      expiresAt: r.expiresAt,
      absoluteExpiresAt: r.absoluteExpiresAt,
      ip: r.ip.slice(0, 64),
      userAgent: r.userAgent.slice(0, 512),
      version: r.version,
    };
  }

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
