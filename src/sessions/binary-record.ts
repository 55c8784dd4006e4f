/**
 * The byte-level reader and writer behind the two positional binary encodings of a session:
 * the Redis record (redis-record.ts) and the plaintext of the sealed cookie (cookie-format.ts).
 * Both are read or written on every request and sized for a few hundred bytes, so both lay out
 * their fields in a fixed order instead of as JSON. Each format picks which of these pieces it
 * uses and in what order. Sessions in Redis and cookies in browsers were written with these
 * bytes, so no method may change what it writes or reads.
 */

/** With the u flag, \p{Cs} matches only unpaired surrogates, which UTF-8 cannot carry. */
export const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Writes into one buffer that it keeps between records: the caller encodes synchronously and
 * takes the bytes out (copy or view) before the next reset, so a record costs no buffer of its own.
 */
export class RecordWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(private readonly size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** A record can throw halfway (data that is not JSON): the next one starts from here regardless. */
  reset() {
    this.pos = 0;
  }

  private room(n: number) {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  byte(b: number) {
    this.room(1);
    this.buf[this.pos++] = b;
  }

  uint32(n: number) {
    this.room(4);
    this.pos = this.buf.writeUInt32BE(n, this.pos);
  }

  /** LEB128. n: a non-negative integer below 2^53, so at most 8 bytes. */
  varint(n: number) {
    this.room(8);
    const buf = this.buf;
    let pos = this.pos;
    while (n > 0x7f) {
      buf[pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[pos++] = n;
    this.pos = pos;
  }

  /** n: an integer within ±2^52. Small negative numbers stay small. */
  zigzag(n: number) {
    this.varint(n < 0 ? -2 * n - 1 : 2 * n);
  }

  /** Exact for any number, where a varint is not. */
  float(n: number) {
    this.room(8);
    this.pos = this.buf.writeDoubleLE(n, this.pos);
  }

  /** `base64url`: the canonical unpadded text of exactly `bytes` bytes, or it will not read back the same. */
  raw(base64url: string, bytes: number) {
    this.room(bytes);
    this.pos += this.buf.write(base64url, this.pos, bytes, 'base64url');
  }

  /** UTF-8 length (varint), then the bytes. `s` must have no LONE_SURROGATE: it would not read back the same. */
  string(s: string) {
    const n = Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.room(n);
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
  }

  /**
   * Any string: UTF-8 length × 2 (varint), + 1 when the bytes are the string's JSON instead (for a
   * lone surrogate), then the bytes.
   */
  taggedString(s: string) {
    const json = LONE_SURROGATE.test(s);
    const text = json ? JSON.stringify(s) : s;
    // Up to 21 UTF-16 units make at most 63 bytes: the length fits the one byte reserved for it,
    // which spares measuring the common short strings before writing them.
    if (text.length <= 21) {
      this.room(1 + 63);
      const start = this.pos + 1;
      const n = this.buf.write(text, start);
      this.buf[this.pos] = n * 2 + (json ? 1 : 0);
      this.pos = start + n;
      return;
    }
    const n = Buffer.byteLength(text);
    this.varint(n * 2 + (json ? 1 : 0));
    this.room(n);
    this.pos += this.buf.write(text, this.pos);
  }

  /** UTF-8 with no length: the record's end is the string's. `s` must have no LONE_SURROGATE. */
  tail(s: string) {
    const n = Buffer.byteLength(s, 'utf8');
    this.room(n);
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
  }

  /** Exactly the bytes written, in a buffer of their own: the one allocation for a record that is kept. */
  copy(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }

  /** The bytes written, without copying them: only until the next reset. */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  /** Lets go of a buffer grown past the starting size, so that one large record does not keep it. */
  shrink() {
    if (this.buf.length > this.size) this.buf = Buffer.allocUnsafe(this.size);
  }
}

/**
 * Throws at the first byte that is not there or not valid, for the caller's catch to make a miss:
 * both formats treat anything they cannot read as no session.
 */
export class RecordReader {
  constructor(
    private readonly buf: Buffer,
    private pos: number,
  ) {}

  private take(n: number): number {
    const at = this.pos;
    if (at + n > this.buf.length) throw new RangeError('truncated record');
    this.pos += n;
    return at;
  }

  byte(): number {
    return this.buf[this.take(1)]!;
  }

  uint32(): number {
    return this.buf.readUInt32BE(this.take(4));
  }

  varint(): number {
    const buf = this.buf;
    let pos = this.pos;
    let n = 0;
    for (let scale = 1; scale < 2 ** 56; scale *= 0x80) {
      if (pos >= buf.length) throw new RangeError('truncated record');
      const b = buf[pos++]!;
      n += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (n > Number.MAX_SAFE_INTEGER) break;
        this.pos = pos;
        return n;
      }
    }
    throw new RangeError('bad varint in record');
  }

  zigzag(): number {
    const z = this.varint();
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  float(): number {
    return this.buf.readDoubleLE(this.take(8));
  }

  raw(bytes: number): string {
    const at = this.take(bytes);
    return this.buf.toString('base64url', at, at + bytes);
  }

  string(): string {
    const n = this.varint();
    const at = this.take(n);
    return this.buf.toString('utf8', at, at + n);
  }

  taggedString(): string {
    const tagged = this.varint();
    const n = tagged >>> 1;
    const at = this.take(n);
    const text = this.buf.toString('utf8', at, at + n);
    return tagged & 1 ? (JSON.parse(text) as string) : text;
  }

  tail(): string {
    const at = this.take(this.buf.length - this.pos);
    return this.buf.toString('utf8', at);
  }

  atEnd(): boolean {
    return this.pos === this.buf.length;
  }
}
