/**
 * Sessions sealed (AES-256-GCM, see sealer.ts) into the cookie itself: nothing is stored
 * server-side per session. The first secret seals; every secret opens (key rotation). What is
 * sealed is the compact form of cookie-format.ts, without IP and User-Agent.
 *
 * A cookie cannot be taken back from a browser, so ending a session means remembering that it
 * ended: `destroy` records the session (by id hash) in the revocation list, and `load` refuses revoked ones.
 */
import { decodeSession, encodeSession } from './cookie-format.js';
import { hashSessionId, type SessionRecord } from './session.js';
import type { RevocationList } from './revocations.js';
import { SessionTooLargeError } from './errors.js';
import type { SessionStore } from './store.js';
import { Sealer } from './sealer.js';

/** How many opened seals are remembered at most. */
export const OPENED_SEALS = 10_000;

/**
 * And how many bytes they may hold (8 MiB), as `entryBytes` counts them: 10,000 common cookies
 * (≈ 230 characters and 125 bytes of plaintext, ≈ 700 bytes counted, ≈ 570 measured: ≈ 6 MB
 * in all) fit; of cookies near MAX_SEALED_LENGTH (≈ 6.5 KB each) about 1,300 are kept.
 */
export const OPENED_SEALS_BYTES = 8 * 1024 * 1024;

/**
 * What one remembered seal holds beyond its text and plaintext: the Map entry, the key's string
 * header, the Buffer and its ArrayBuffer. Measured (heap and external, after a GC, before and
 * after clearing the Map; Node 20): 40–230 bytes an entry; counted at 350.
 */
export const OPENED_SEAL_OVERHEAD = 350;

function entryBytes(token: string, plain: Buffer): number {
  return token.length + plain.length + OPENED_SEAL_OVERHEAD;
}

/** Browsers keep at least 4096 bytes per cookie, name and attributes included. */
export const MAX_SEALED_LENGTH = 3800;

export class CookieStore implements SessionStore {
  readonly backend = 'cookie' as const;
  private readonly sealer: Sealer;
  /**
   * The plaintext of seals opened lately, by their exact text. A browser sends the same cookie
   * until it changes, and opening it (AES-GCM) was the largest part of a cookie read: 156 → 129 µs
   * of server CPU per read in an A/B run (docs/performance.md). Only seals that opened are kept,
   * so nobody can fill this with their own values; the bytes are decoded afresh on every read,
   * so no request shares objects with another. New seals are not added when made: under a
   * stream of writes they would only age into the old generation before their first read.
   * Bounded by count (OPENED_SEALS) and by bytes (OPENED_SEALS_BYTES): a user whose session is
   * near the cookie limit, writing in a loop, filled it with 10,000 × 6.5 KB (≈ 65 MB).
   */
  private readonly opened = new Map<string, Buffer>();
  private openedBytes = 0;

  /**
   * `deployment` (db/deployment.ts) goes into the key: another deployment given the same
   * SESSION_SECRETS (a staging copy of production's .env) cannot open this one's cookies, whose
   * user ids name other people there. Cookies sealed before keys were bound to the deployment
   * still open until they expire, and are sealed again, bound, at their next write — if they were
   * issued before `unboundBefore` (db/deployment.ts: unboundCookiesBefore); later ones are
   * another deployment's, on an older release.
   */
  constructor(
    secrets: readonly string[],
    private readonly revocations: RevocationList,
    deployment?: string,
    private readonly unboundBefore = Number.POSITIVE_INFINITY,
  ) {
    this.sealer = deployment === undefined ? new Sealer(secrets, 'session cookie') : new Sealer(secrets, `session cookie for deployment ${deployment}`, 'session cookie');
  }

  async load(token: string): Promise<SessionRecord | undefined> {
    const plain = token.length <= MAX_SEALED_LENGTH ? this.open(token) : undefined;
    const sealed = plain && decodeSession(plain);
    if (!sealed || sealed.expiresAt <= Date.now()) return undefined;
    if (sealed.issuedAt >= this.unboundBefore && this.sealer.sealedForOldPurpose(token)) return undefined;
    // Spelled out: `{ ...sealed, idHash, backend }` costs several microseconds in V8 (new
    // properties after a spread take a slow path), more than decoding the whole cookie.
    const record: SessionRecord = {
      id: sealed.id,
      // The session id travels inside the seal, so a session keeps its id (and its revocation
      // key) when it moves between backends.
      idHash: hashSessionId(sealed.id),
      handle: sealed.handle,
      userId: sealed.userId,
      backend: 'cookie',
      data: sealed.data,
      createdAt: sealed.createdAt,
      issuedAt: sealed.issuedAt,
      lastActivity: sealed.lastActivity,
      expiresAt: sealed.expiresAt,
      absoluteExpiresAt: sealed.absoluteExpiresAt,
      ip: sealed.ip,
      userAgent: sealed.userAgent,
      version: sealed.version,
    };
    return this.revocations.isRevoked(record) ? undefined : record;
  }

  async create(record: SessionRecord): Promise<string> {
    return this.seal(record);
  }

  async save(record: SessionRecord): Promise<string | undefined> {
    return this.revocations.isRevoked(record) ? undefined : this.seal(record);
  }

  async touch(record: SessionRecord): Promise<string | undefined> {
    return this.save(record);
  }

  /**
   * Nothing to write when the id is on the list already (the app revokes before it destroys):
   * written again here, the revocation's database write ran under the cookie's deadline, and a
   * slow database was counted as the cookie backend timing out.
   */
  async destroy(record: SessionRecord): Promise<void> {
    if (this.revocations.isSessionIdRevoked(record.idHash)) return;
    await this.revocations.revokeSession(record.idHash, record.absoluteExpiresAt);
  }

  /** A sealed cookie has nothing to compare a move against: the browser holds it. */
  moveIn(record: SessionRecord, _readVersion: number): Promise<string | undefined> {
    return this.create(record);
  }

  /** The cookie is replaced by the destination's; there is nothing here to remove. */
  async evict(_record: SessionRecord): Promise<void> {}

  /** What the remembered seals hold, counted as OPENED_SEALS_BYTES bounds it (for tests). */
  get cachedBytes(): number {
    return this.openedBytes;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {}

  private open(token: string): Buffer | undefined {
    const known = this.opened.get(token);
    if (known) return known;
    const plain = this.sealer.openBytes(token);
    if (!plain) return undefined;
    // A copy of the text as the key: the cookie parser's value is a slice of the whole Cookie
    // header, which V8 keeps alive with it (up to 16 KB a key, with the browser's other cookies).
    // The text is ASCII (openBytes checked), so latin1 copies it exactly: ≈ 0.6 µs for a common
    // cookie, on a miss only (which has just decrypted, ≈ 20 µs). `a + b` or a Map key hash do
    // not copy it: V8 keeps the slice inside.
    const key = Buffer.from(token, 'latin1').toString('latin1');
    const bytes = entryBytes(key, plain);
    // Oldest first out (a Map keeps insertion order): a cheap bound rather than a strict LRU.
    while (this.opened.size > 0 && (this.opened.size >= OPENED_SEALS || this.openedBytes + bytes > OPENED_SEALS_BYTES)) {
      const [oldest, oldPlain] = this.opened.entries().next().value!;
      this.opened.delete(oldest);
      this.openedBytes -= entryBytes(oldest, oldPlain);
    }
    this.opened.set(key, plain);
    this.openedBytes += bytes;
    return plain;
  }

  private seal(record: SessionRecord): string {
    const sealed = this.sealer.sealBytes(encodeSession(record));
    if (sealed.length > MAX_SEALED_LENGTH) throw new SessionTooLargeError(sealed.length, MAX_SEALED_LENGTH);
    return sealed;
  }
}
