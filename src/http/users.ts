/** How users and sessions are shown by the API: never a password hash, never a session id. */
import type { PlatformConnection, User } from '../db/models.js';
import { describeSession, type SessionRecord } from '../sessions/session.js';

export function publicUser(u: Pick<User, 'id' | 'email' | 'name' | 'role'> & { active?: boolean }) {
  return { id: u.id, email: u.email, name: u.name, role: u.role, ...(u.active === undefined ? {} : { active: u.active }) };
}

export function publicPlatform(p: Pick<PlatformConnection, 'id' | 'name' | 'type'>, activeId: number | null | undefined) {
  return { id: p.id, name: p.name, type: p.type, active: p.id === activeId };
}

export function sessionListEntry(r: SessionRecord, currentHandle?: string) {
  return { ...describeSession(r), ip: r.ip, userAgent: r.userAgent, current: r.handle === currentHandle };
}
