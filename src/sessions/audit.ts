/**
 * The audit trail: each session event is a `session_events` row and a structured log line.
 * Neither ever holds a session id, a cookie or a password — only the public handle.
 */
import { Op, type InferCreationAttributes } from 'sequelize';
import type { Logger } from 'pino';
import type { Models, SessionEvent } from '../db/models.js';
import { RepeatedWarning } from '../logging/repeated-warning.js';
import type { ClientInfo, SessionRecord } from './session.js';

export type SessionEventType = 'created' | 'rotated' | 'destroyed' | 'expired' | 'revoked' | 'migrated' | 'disabled' | 'enabled' | 'revoke_all';

export interface AuditEntry {
  type: SessionEventType;
  record?: Pick<SessionRecord, 'userId' | 'handle' | 'backend'>;
  userId?: number;
  reason: string | null;
  /** `user:<id>`, `admin` or `system`; defaults to the session's user. */
  actor?: string;
  count?: number;
}

/**
 * Rows kept while the database does not take them, at most: an outage's logouts and admin
 * actions are what an audit trail is for, but an instance's memory is not a store. Past it, the
 * oldest are dropped (counted in the warning; their log lines remain).
 */
const MAX_UNWRITTEN = 10_000;
/** How long rows the database did not take wait before they are tried again. */
const RETRY_MS = 1_000;

type EventRow = Omit<InferCreationAttributes<SessionEvent>, 'id'>;

export class SessionAudit {
  private unwritten: EventRow[] = [];
  /** The order rows were recorded in: their writes fail in any order (one waits on a dead connection, the next fails at once). */
  private readonly recorded = new WeakMap<EventRow, number>();
  private recordedCount = 0;
  /**
   * Rows whose first write has not settled, in the order recorded. None recorded after the
   * first of them is written by the retry: a write that waits on a dead connection past the
   * retry (its query timeout) would otherwise fail after the rows recorded after it were in.
   */
  private readonly firstWrites = new Set<EventRow>();
  private writing = false;
  private closed = false;
  private dropped = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly failed: RepeatedWarning;

  constructor(
    private readonly models: Models,
    private readonly logger: Logger,
  ) {
    this.failed = new RepeatedWarning(logger, 'could not write session event');
  }

  /**
   * Fire and forget: a failed audit write never fails the request. The row is kept, with the
   * time it happened, and written once the database takes it.
   */
  record(client: ClientInfo | undefined, entry: AuditEntry): void {
    const userId = entry.record?.userId ?? entry.userId ?? null;
    const row = {
      type: entry.type,
      userId,
      handle: entry.record?.handle ?? null,
      backend: entry.record?.backend ?? null,
      actor: entry.actor ?? (userId !== null ? `user:${userId}` : 'system'),
      reason: entry.reason,
      count: entry.count ?? 1,
      // As the sessions table keeps it: behind TRUST_PROXY, X-Forwarded-For can hold any text.
      ip: client ? client.ip.slice(0, 64) : null,
      userAgent: client?.userAgent ?? null,
    };
    this.logger.info({ event: 'session', ...row }, `session ${entry.type}`);
    const kept = { ...row, createdAt: new Date() };
    this.recorded.set(kept, ++this.recordedCount);
    // While rows wait to be written again, a new one joins them rather than overtake them.
    if (this.unwritten.length > 0) return this.keep([kept]);
    this.firstWrites.add(kept);
    this.models.SessionEvent.create(kept).then(
      () => this.firstWrites.delete(kept),
      (err: unknown) => {
        this.firstWrites.delete(kept);
        this.keep([kept], err);
      },
    );
  }

  /** One last try for the rows kept; those the database still does not take are counted in the log. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.unwritten.length > 0) await this.writeKept().catch(() => undefined);
    if (this.unwritten.length > 0) this.logger.warn({ events: this.unwritten.length }, 'session events not written to the database at shutdown (their log lines have them)');
  }

  /** Kept in the order they happened (ids follow it once written), whatever order their writes failed in. */
  private keep(rows: EventRow[], err?: unknown) {
    // Both in order already (a failed retry's batch, or one row): merged.
    const merged: EventRow[] = [];
    let i = 0;
    let j = 0;
    while (i < this.unwritten.length || j < rows.length) {
      const takeKept = j >= rows.length || (i < this.unwritten.length && this.order(this.unwritten[i]!) <= this.order(rows[j]!));
      merged.push(takeKept ? this.unwritten[i++]! : rows[j++]!);
    }
    this.unwritten = merged;
    const over = this.unwritten.length - MAX_UNWRITTEN;
    if (over > 0) {
      this.unwritten.splice(0, over);
      this.dropped += over;
    }
    if (err !== undefined) this.failed.warn({ err, kept: this.unwritten.length, ...(this.dropped > 0 && { dropped: this.dropped }) });
    this.retryLater();
  }

  private retryLater() {
    if (this.closed) return;
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      void this.writeKept().catch(() => undefined);
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  private order(row: EventRow): number {
    return this.recorded.get(row) ?? 0;
  }

  private async writeKept(): Promise<void> {
    // One batch at a time: a later one would overtake a batch still waiting on its connection.
    if (this.writing) return this.retryLater();
    const [waiting] = this.firstWrites;
    const before = waiting ? this.unwritten.findIndex((r) => this.order(r) > this.order(waiting)) : -1;
    const batch = before === -1 ? this.unwritten : this.unwritten.slice(0, before);
    this.unwritten = before === -1 ? [] : this.unwritten.slice(before);
    if (this.unwritten.length > 0) this.retryLater();
    if (batch.length === 0) return;
    this.writing = true;
    try {
      await this.models.SessionEvent.bulkCreate(batch);
    } catch (err) {
      this.keep(batch, err);
      throw err;
    } finally {
      this.writing = false;
    }
    this.logger.info({ events: batch.length }, 'session events written after failing');
  }
}

/**
 * Deletes up to `limit` audit rows older than `before`, oldest first, and says how many: one
 * batch of `sessions:cleanup`'s retention (README, "Operations"). Rows are in id order as in
 * time order, so a batch reads the oldest ids and stops.
 */
export async function deleteEventsBefore(models: Models, before: Date, limit: number): Promise<number> {
  const rows = await models.SessionEvent.findAll({ attributes: ['id'], where: { createdAt: { [Op.lt]: before } }, order: [['id', 'ASC']], limit });
  if (rows.length === 0) return 0;
  return models.SessionEvent.destroy({ where: { id: rows.map((r) => r.id) } });
}
