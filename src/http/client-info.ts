/**
 * Who is asking, as a session and the audit trail record it: the client's address (behind
 * TRUST_PROXY, from X-Forwarded-For) and its User-Agent.
 */
import type { Context } from 'koa';
import type { ClientInfo } from '../sessions/session.js';

export function clientInfo(ctx: Context): ClientInfo {
  // On a dual-stack socket (HOST=::) an IPv4 client shows as ::ffff:a.b.c.d: shown as a.b.c.d.
  const ip = ctx.ip.startsWith('::ffff:') && ctx.ip.includes('.') ? ctx.ip.slice(7) : ctx.ip;
  return { ip, userAgent: (ctx.get('User-Agent') || '').slice(0, 512) };
}
