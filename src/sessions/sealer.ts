/**
 * Authenticated encryption (AES-256-GCM) with key rotation: the first secret seals, every
 * secret opens. Keys are derived from SESSION_SECRETS with HKDF, one purpose per `info`, so
 * the cookie key never equals the at-rest key even with the same secret.
 *
 * Sealed form: `<key id>.<iv>.<ciphertext><tag>`, each part base64url without padding; the key
 * id is 6 characters, the 12-byte IV 16.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomFillSync } from 'node:crypto';

interface Key {
  id: string;
  key: Buffer;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID_CHARS = 6;
const BODY_START = KEY_ID_CHARS + 1 + 16 + 1;
/** At least one byte and the tag: 17 bytes. */
const MIN_BODY_CHARS = 23;
const DOT = 0x2e;
/** Last characters whose unused low bits are 0, by body length mod 4 (2: 4 bits, 3: 2 bits). */
const LAST_CHAR = ['', '', 'AQgw', 'AEIMQUYcgkosw048'];

/**
 * Drawing from the CSPRNG costs a few microseconds a call whatever the size, more than the
 * whole AES-GCM seal of a session, so IVs are drawn in batches (as Node's randomUUID does).
 * Each is still 12 fresh random bytes, used once.
 */
const IV_BATCH = 256;
const ivPool = Buffer.alloc(IV_BYTES * IV_BATCH);
let ivNext = ivPool.length;

function nextIv(): Buffer {
  if (ivNext === ivPool.length) {
    randomFillSync(ivPool);
    ivNext = 0;
  }
  const iv = ivPool.subarray(ivNext, ivNext + IV_BYTES);
  ivNext += IV_BYTES;
  return iv;
}

export class Sealer {
  private readonly keys: Key[];
  private readonly byId: Map<string, Key>;
  private readonly oldPurposeIds: ReadonlySet<string>;

  /** `openingToo`: a purpose whose seals still open (never sealed with), e.g. the one a purpose replaced. */
  constructor(secrets: readonly string[], purpose: string, openingToo?: string) {
    if (secrets.length === 0) throw new Error('Sealer needs at least one secret');
    const keysFor = (info: string) =>
      secrets.map((secret) => {
        const key = Buffer.from(hkdfSync('sha256', secret, 'switchboard', info, 32));
        const id = createHash('sha256').update(key).digest('base64url').slice(0, 6);
        return { id, key };
      });
    this.keys = keysFor(purpose);
    const old = openingToo === undefined ? [] : keysFor(openingToo);
    this.oldPurposeIds = new Set(old.map((k) => k.id));
    this.byId = new Map([...old, ...this.keys].map((k) => [k.id, k]));
  }

  /** Whether `sealed` names a key of the `openingToo` purpose: a seal of the kind that purpose replaced. */
  sealedForOldPurpose(sealed: string): boolean {
    return this.oldPurposeIds.size > 0 && this.oldPurposeIds.has(sealed.slice(0, KEY_ID_CHARS));
  }

  seal(plaintext: string): string {
    return this.sealBytes(plaintext);
  }

  /** The plaintext, or `undefined` if the value was not sealed by one of our keys or was altered. */
  open(sealed: string): string | undefined {
    return this.openBytes(sealed)?.toString('utf8');
  }

  /** Seals bytes (or a string, as UTF-8). The bytes may be reused once this returns. */
  sealBytes(plain: Uint8Array | string): string {
    const { id, key } = this.keys[0]!;
    const iv = nextIv();
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const ciphertext = typeof plain === 'string' ? cipher.update(plain, 'utf8') : cipher.update(plain);
    cipher.final();
    const body = Buffer.concat([ciphertext, cipher.getAuthTag()]);
    return `${id}.${iv.toString('base64url')}.${body.toString('base64url')}`;
  }

  /** Like `open`, as bytes. */
  openBytes(sealed: string): Buffer | undefined {
    const length = sealed.length;
    const bodyChars = length - BODY_START;
    const tail = bodyChars % 4;
    if (bodyChars < MIN_BODY_CHARS || tail === 1 || sealed.charCodeAt(KEY_ID_CHARS) !== DOT || sealed.charCodeAt(BODY_START - 1) !== DOT) return undefined;
    // Only the canonical spelling opens. Node's base64 decoder accepts `+` and `/`, reads a
    // character above U+00FF as its low byte, and skips or stops at anything else outside the
    // alphabet (whitespace, `=`, `.`), writing fewer bytes than the length promises. So: ASCII
    // only, no `+` or `/`, every byte the length promises, and the last character's unused bits
    // 0. Cheaper than spelling the bytes out again to compare, or a regular expression.
    if (Buffer.byteLength(sealed, 'utf8') !== length || sealed.includes('+') || sealed.includes('/')) return undefined;
    if (tail !== 0 && !LAST_CHAR[tail]!.includes(sealed[length - 1]!)) return undefined;
    const key = this.byId.get(sealed.slice(0, KEY_ID_CHARS));
    if (!key) return undefined;
    const bodyLength = (bodyChars * 3) >>> 2;
    // One buffer for IV and body: the cipher copies what it needs from it.
    const bytes = Buffer.allocUnsafe(IV_BYTES + bodyLength);
    if (bytes.write(sealed.slice(KEY_ID_CHARS + 1, BODY_START - 1), 0, 'base64url') !== IV_BYTES) return undefined;
    if (bytes.write(sealed.slice(BODY_START), IV_BYTES, 'base64url') !== bodyLength) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.key, bytes.subarray(0, IV_BYTES));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      const plain = decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES));
      // GCM yields all of the plaintext from `update`; `final` only checks the tag (and throws).
      decipher.final();
      return plain;
    } catch {
      return undefined;
    }
  }
}
