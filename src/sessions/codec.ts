/**
 * How session data is written at rest by the database and Redis stores: plain JSON, or
 * sealed (SESSION_ENCRYPT_AT_REST) so a dump of the table or keyspace shows nothing usable.
 */
import type { SessionData } from './session.js';
import { Sealer } from './sealer.js';

export interface DataCodec {
  encode(data: SessionData): string;
  /** `undefined` when the stored text cannot be read (corrupt, or sealed with a retired key). */
  decode(text: string): SessionData | undefined;
}

export const jsonCodec: DataCodec = {
  encode: (data) => JSON.stringify(data),
  decode: (text) => {
    try {
      return JSON.parse(text) as SessionData;
    } catch {
      return undefined;
    }
  },
};

export function sealedCodec(secrets: readonly string[]): DataCodec {
  const sealer = new Sealer(secrets, 'session data at rest');
  return {
    encode: (data) => sealer.seal(JSON.stringify(data)),
    decode: (text) => {
      const plain = sealer.open(text);
      return plain === undefined ? undefined : jsonCodec.decode(plain);
    },
  };
}
