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
    this.models.SessionEvent.create(kept).catch((err: unknown) => this.keep([kept], err));
  }

  /** One last try for the rows kept; those the database still does not take are counted in the log. */
  async close(): Promise<void> {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.unwritten.length > 0) await this.writeKept().catch(() => undefined);
    if (this.unwritten.length > 0) this.logger.warn({ events: this.unwritten.length }, 'session events not written to the database at shutdown (their log lines have them)');
  }

  /** Kept in the order they happened (ids follow it once written), whatever order their writes failed in. */
  private keep(rows: EventRow[], err: unknown) {
    // Both in order already (a failed retry's batch, or one row): merged.
    const order = (r: EventRow) => this.recorded.get(r) ?? 0;
    const merged: EventRow[] = [];
    let i = 0;
    let j = 0;
    while (i < this.unwritten.length || j < rows.length) {
      const takeKept = j >= rows.length || (i < this.unwritten.length && order(this.unwritten[i]!) <= order(rows[j]!));
      merged.push(takeKept ? this.unwritten[i++]! : rows[j++]!);
    }
    this.unwritten = merged;
    const over = this.unwritten.length - MAX_UNWRITTEN;
    if (over > 0) {
      this.unwritten.splice(0, over);
      this.dropped += over;
    }
    this.failed.warn({ err, kept: this.unwritten.length, ...(this.dropped > 0 && { dropped: this.dropped }) });
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      void this.writeKept().catch(() => undefined);
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  private async writeKept(): Promise<void> {
    const batch = this.unwritten;
    if (batch.length === 0) return;
    this.unwritten = [];
    try {
      await this.models.SessionEvent.bulkCreate(batch);
    } catch (err) {
      this.keep(batch, err);
      throw err;
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
