/**
 * The sessions a request ends (`SessionControl.ending`), applied once the route has answered,
 * and a rotation's catch-up with what happened to the old id meanwhile. The middleware decides
 * when each runs relative to writing the current session (session-middleware.ts).
 */
import type { Context } from 'koa';
import type { Metrics } from '../metrics/metrics.js';
import type { AuditEntry, SessionAudit } from '../sessions/audit.js';
import type { SessionBackends } from '../sessions/backends.js';
import type { SessionData } from '../sessions/session.js';
import { clientInfo } from './client-info.js';
import type { Ending, SessionControl } from './session-control.js';

export class SessionEndings {
  constructor(
    private readonly backends: SessionBackends,
    private readonly metrics: Metrics,
    private readonly audit: SessionAudit,
  ) {}

  /**
   * Ends what the route ended. A session of the current one's handle (the old id of a rotation)
   * ends before the new id is written (the handle is unique in the directory); the others —
   * the session a login replaces, the oldest beyond the per-user limit — only once the new
   * session is stored, so that a login that fails ends nothing.
   */
  async apply(ctx: Context, control: SessionControl, which: 'same handle' | 'others') {
    const handle = control.current?.handle;
    const seen = new Set<string>();
    for (const ending of control.ending) {
      const { record } = ending;
      if ((record.handle === handle) !== (which === 'same handle') || seen.has(record.idHash)) continue;
      seen.add(record.idHash);
      await this.backends.end(record);
      if (ending.kind === 'ended by user' || ending.kind === 'ended by system') this.metrics.revocations.inc({ reason: ending.reason });
      this.audit.record(clientInfo(ctx), auditEntryOf(ending, handle));
    }
  }

  /**
   * A rotation (password change) copies the session as this request read it; another request
   * may have saved the old id since (a platform switch in another tab, during the seconds a
   * password check takes). The new id starts from that save, with this request's own changes
   * on top, rather than silently dropping it. A save that lands later still finds the old id
   * ended, and answers 409.
   */
  async catchUpRotation(ctx: Context, control: SessionControl) {
    const { rotatedFrom: old, current } = control;
    if (!old || !current?.isNew || !old.record.id) return;
    const latest = await this.backends.latest(old.record).catch(() => null);
    // The client has gone (a browser that gave up waiting on a slow change): nobody would receive
    // the new id's cookie, and stored it would be a live session that nobody holds, listed under
    // the old one's handle until its idle expiry. The old id ends all the same (below).
    if (latest !== undefined && ctx.req.socket.destroyed) {
      control.current = undefined;
      control.clearCookie = true;
      // Audited as what it is: with no new id, the old one would read as replaced by a login.
      const ending = control.ending.findIndex((e) => e.record === old.record);
      if (ending >= 0) control.ending[ending] = { kind: 'client gone', record: old.record };
      return;
    }
    if (latest === undefined) {
      // Logged out or revoked after the route checked (backends.isLive): the new id would bring
      // the session back. It is not stored, and the browser's cookie is cleared.
      control.current = undefined;
      control.clearCookie = true;
      const ending = control.ending.findIndex((e) => e.record === old.record);
      if (ending >= 0) control.ending.splice(ending, 1); // ended already, by whoever logged it out
      return;
    }
    if (!latest || latest.version <= old.record.version) return;
    const data: Record<string, unknown> = { ...latest.data };
    for (const key of [...old.changes, ...current.changes]) data[key] = current.data[key];
    current.record = { ...current.record, data: data as SessionData, version: latest.version + 1 };
  }
}

/**
 * What the audit says of an ending; `current`: the handle of the request's session, if it has
 * one. A session replaced under the current handle is its old id (a rotation); under another
 * handle, the session a login replaced.
 */
function auditEntryOf(ending: Ending, current: string | undefined): AuditEntry {
  const { record } = ending;
  switch (ending.kind) {
    case 'ended by system':
      return { type: 'revoked', record, reason: ending.reason, actor: 'system' };
    case 'client gone':
      return { type: 'destroyed', record, reason: 'client_gone' };
    case 'ended by user':
      return { type: 'destroyed', record, reason: ending.reason };
    case 'replaced':
      return record.handle === current ? { type: 'rotated', record, reason: null } : { type: 'destroyed', record, reason: 'replaced_by_login' };
  }
}
