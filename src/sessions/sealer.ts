/**
 * Authenticated encryption (AES-256-GCM) with key rotation: the first secret seals, every
 * secret opens. Keys are derived from SESSION_SECRETS with HKDF, one purpose per `info`, so
 * the cookie key never equals the at-rest key even with the same secret.
 *
 * Sealed form: `<key id>.<iv>.<ciphertext><tag>`, each part base64url.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';

interface Key {
  id: string;
  key: Buffer;
}

export class Sealer {
  private readonly keys: Key[];
  private readonly byId: Map<string, Key>;

  constructor(secrets: readonly string[], purpose: string) {
    if (secrets.length === 0) throw new Error('Sealer needs at least one secret');
    this.keys = secrets.map((secret) => {
      const key = Buffer.from(hkdfSync('sha256', secret, 'switchboard', purpose, 32));
      const id = createHash('sha256').update(key).digest('base64url').slice(0, 6);
      return { id, key };
    });
    this.byId = new Map(this.keys.map((k) => [k.id, k]));
  }

  seal(plaintext: string): string {
    const { id, key } = this.keys[0]!;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return `${id}.${iv.toString('base64url')}.${body.toString('base64url')}`;
  }

  /** The plaintext, or `undefined` if the value was not sealed by one of our keys or was altered. */
  open(sealed: string): string | undefined {
    const [id, ivText, bodyText, extra] = sealed.split('.');
    if (!id || !ivText || !bodyText || extra !== undefined) return undefined;
    const key = this.byId.get(id);
    if (!key) return undefined;
    const iv = Buffer.from(ivText, 'base64url');
    const body = Buffer.from(bodyText, 'base64url');
    if (iv.length !== 12 || body.length < 17) return undefined;
    // Node's base64 decoder skips stray characters; only the canonical spelling is ours.
    if (iv.toString('base64url') !== ivText || body.toString('base64url') !== bodyText) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.key, iv);
      decipher.setAuthTag(body.subarray(body.length - 16));
      return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
  }
}
