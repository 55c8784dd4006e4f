/**
 * The value of the session cookie: which backend holds the session, and the token that store
 * knows it by — `<c|d|r>.<token>`.
 *
 *   c.<sealed session>   the cookie backend: sealed with SESSION_SECRETS (cookie-store.ts)
 *   d.<id>.<signature>   the database
 *   r.<id>.<signature>   Redis
 *
 * A database or Redis session id is 256 random bits, unguessable without a signature; it is
 * signed anyway because that is what SESSION_SECRETS promise (API.md: every new cookie is
 * sealed or signed with the first secret, the others only verify). So taking a secret out of
 * the list ends every session whose cookie only it signed, whatever the backend, as operators
 * rotating a leaked secret expect. The signature is HMAC-SHA256 of the id under a key derived
 * from each secret (HKDF, its own purpose), cut to 128 bits; it stays the same when a session
 * moves between the database and Redis, since the id does.
 *
 * Cookies from releases that did not sign ids (`d.<id>`) still open for sessions issued before
 * `unsignedBefore` (deployment.ts): nobody is logged out by the upgrade, and those sessions
 * end within SESSION_ABSOLUTE_TIMEOUT like any other. Until that instant (an hour after the
 * deployment first ran a signing release) this release issues unsigned cookies too: during a
 * rolling upgrade the older instances, which read a signature as part of the id, must still
 * open every new session.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { BackendName } from '../config/config.js';

const PREFIX: Record<BackendName, string> = { cookie: 'c', database: 'd', redis: 'r' };
const BY_PREFIX: Record<string, BackendName> = { c: 'cookie', d: 'database', r: 'redis' };
const SIGNATURE_BYTES = 16;
const SIGNATURE_CHARS = 22;
/**
 * Tokens verified and signatures made, so that a session's every request does not pay an HMAC
 * (a save builds its cookie value, whether or not it is sent): each map is cleared when full.
 */
const REMEMBERED_MAX = 10_000;

function remember(map: Map<string, string>, key: string, value: string): void {
  if (map.size >= REMEMBERED_MAX) map.clear();
  map.set(key, value);
}

export interface ParsedCookieValue {
  backend: BackendName;
  /** What the backend's store knows the session by: the sealed value, or the session id. */
  token: string;
  /** A database or Redis id from before ids were signed: opens only for a session issued before `unsignedBefore`. */
  unsigned: boolean;
}

export class SessionCookieValue {
  private readonly keys: Buffer[];
  /** Signed token → id. */
  private readonly verified = new Map<string, string>();
  /** Id → its signature under the first secret. */
  private readonly signatures = new Map<string, string>();

  constructor(
    secrets: readonly string[],
    /** Unsigned ids open for sessions issued before this instant (ms); 0: none do. */
    readonly unsignedBefore: number,
  ) {
    if (secrets.length === 0) throw new Error('SessionCookieValue needs at least one secret');
    this.keys = secrets.map((secret) => Buffer.from(hkdfSync('sha256', secret, 'switchboard', 'session id signature', 32)));
  }

  /** The backend a cookie value names, if it is one of ours (signed or not). */
  static backendOf(value: string): BackendName | undefined {
    return BY_PREFIX[value.slice(0, value.indexOf('.'))];
  }

  /** The cookie value for a session `backend` holds under `token` (signed with the first secret). */
  format(backend: BackendName, token: string, now = Date.now()): string {
    if (backend === 'cookie') return `c.${token}`;
    if (now < this.unsignedBefore) return `${PREFIX[backend]}.${token}`;
    let signature = this.signatures.get(token);
    if (signature === undefined) remember(this.signatures, token, (signature = this.signature(this.keys[0]!, token).toString('base64url')));
    return `${PREFIX[backend]}.${token}.${signature}`;
  }

  /** What a cookie value names, or undefined if it is not ours or its signature does not verify. */
  parse(value: string): ParsedCookieValue | undefined {
    const dot = value.indexOf('.');
    const backend = BY_PREFIX[value.slice(0, dot)];
    const token = value.slice(dot + 1);
    if (!backend || token.length === 0 || token.length > 4000) return undefined;
    if (backend === 'cookie') return { backend, token, unsigned: false };
    const signed = token.lastIndexOf('.');
    if (signed < 0) return this.unsignedBefore > 0 ? { backend, token, unsigned: true } : undefined;
    const id = this.verify(token, signed);
    return id === undefined ? undefined : { backend, token: id, unsigned: false };
  }

  private verify(token: string, dot: number): string | undefined {
    const known = this.verified.get(token);
    if (known !== undefined) return known;
    const given = token.slice(dot + 1);
    if (given.length !== SIGNATURE_CHARS) return undefined;
    const mac = Buffer.from(given, 'base64url');
    // Only the canonical spelling: the decoder skips characters outside the alphabet.
    if (mac.length !== SIGNATURE_BYTES || mac.toString('base64url') !== given) return undefined;
    const id = token.slice(0, dot);
    const signedWith = this.keys.findIndex((key) => timingSafeEqual(this.signature(key, id), mac));
    if (signedWith < 0) return undefined;
    remember(this.verified, token, id);
    if (signedWith === 0) remember(this.signatures, id, given);
    return id;
  }

  private signature(key: Buffer, id: string): Buffer {
    return createHmac('sha256', key).update(id).digest().subarray(0, SIGNATURE_BYTES);
  }
}
