/**
 * Any server-side SessionStore as a koa-session external store
 * (`get(key, maxAge)`, `set(key, sess, maxAge, {changed})`, `destroy(key)`), so the stores are
 * usable by anyone already on koa-session. koa-session's session object is kept whole under
 * `data.koa`; its key is the session id (hashed at rest like ours). koa-session sessions have
 * no user, so they are filed under user 0. The cookie store does not fit: there the cookie *is*
 * the session, and koa-session's own cookie mode already does that.
 */
import { hashSessionId, type SessionRecord } from './session.js';
import type { SessionStore } from './store.js';

type KoaSession = Record<string, unknown>;

export function toKoaSessionStore(store: SessionStore) {
  if (store.backend === 'cookie') throw new Error('the cookie store cannot back koa-session: use koa-session cookie mode');
  function record(key: string, sess: KoaSession, maxAge: number | 'session' | undefined): SessionRecord {
    const now = Date.now();
    const ttl = typeof maxAge === 'number' ? maxAge : 86_400_000;
    const idHash = hashSessionId(key);
    return {
      id: key,
      idHash,
      handle: idHash.slice(0, 22),
      userId: 0,
      backend: store.backend,
      data: { csrfToken: '', user: { id: 0, email: '', name: '', role: 'anonymous' }, koa: sess },
      createdAt: now,
      issuedAt: now,
      lastActivity: now,
      expiresAt: now + ttl,
      absoluteExpiresAt: now + ttl,
      ip: '',
      userAgent: '',
      version: 1,
    };
  }
  return {
    async get(key: string): Promise<KoaSession | undefined> {
      return (await store.load(key))?.data.koa as KoaSession | undefined;
    },
    async set(key: string, sess: KoaSession, maxAge: number | 'session' | undefined): Promise<void> {
      const r = record(key, sess, maxAge);
      if ((await store.save(r)) === undefined) await store.create(r);
    },
    async destroy(key: string): Promise<void> {
      const existing = await store.load(key);
      if (existing) await store.destroy(existing);
    },
  };
}
