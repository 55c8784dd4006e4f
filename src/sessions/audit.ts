/**
 * The audit trail: each session event is a `session_events` row and a structured log line.
 * Neither ever holds a session id, a cookie or a password — only the public handle.
 */
import type { Logger } from 'pino';
import type { Models } from '../db/models.js';
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

export class SessionAudit {
  constructor(
    private readonly models: Models,
    private readonly logger: Logger,
  ) {}

  /** Fire and forget: a failed audit write is logged, never fails the request. */
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
    this.models.SessionEvent.create(row).catch((err: unknown) => this.logger.warn({ err }, 'could not write session event'));
  }
}
