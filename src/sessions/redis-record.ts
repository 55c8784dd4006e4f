/**
 * The binary form of a session in Redis (redis-store.ts): one string value, about 100 bytes
 * for a usual login, so that a session costs ≈ 200 B of Redis memory (docs/performance.md,
 * "Redis bytes per session"). Positional and binary because a hash's field names, a JSON
 * object's keys and text digits cost more than the session itself at this size.
 *
 *   byte 0      format (RECORD_FORMAT); any other value is not a session in this format: a miss
 *   bytes 1–4   version, uint32 big-endian. At this offset in every format, present or future:
 *               the Lua scripts compare it without decoding the rest.
 *   byte 5      backend (bits 0–1), handle stored raw (bit 2), data kind (bits 3–4)
 *   then        handle              16 raw bytes when canonical (see CANONICAL_128), else a string
 *               userId              varint
 *               createdAt           varint, ms
 *               issuedAt            zigzag varint, ms after createdAt
 *               lastActivity        zigzag varint, ms after issuedAt
 *               expiresAt           zigzag varint, ms after lastActivity
 *               absoluteExpiresAt   zigzag varint, ms after createdAt
 *               data, by kind:
 *                 usual   the shape every login writes, see writeUsualData
 *                 json    JSON text to the end: any other JSON-serialisable data
 *                 sealed  the DataCodec's text to the end (SESSION_ENCRYPT_AT_REST)
 *   A string is its UTF-8 byte length (varint) and its UTF-8 bytes.
 *
 * Not kept: `ip` and `userAgent` (read back as ''). They are needed to list sessions, not to
 * serve them, and the database directory every session has keeps them.
 */
import type { BackendName } from '../config/config.js';
import { LONE_SURROGATE, RecordReader, RecordWriter } from './binary-record.js';
import type { DataCodec } from './codec.js';
import type { SessionData, SessionRecord } from './session.js';

export const RECORD_FORMAT = 1;
/** Where the uint32 version sits (0-based; Lua's string.byte counts from 1, so bytes 2–5 there). */
export const VERSION_OFFSET = 1;

const BACKENDS: readonly BackendName[] = ['cookie', 'database', 'redis'];
const enum DataKind {
  Usual = 0,
  Json = 1,
  Sealed = 2,
}
const enum Role {
  Other = 0,
  User = 1,
  Admin = 2,
}
const enum Platform {
  Absent = 0,
  Null = 1,
  Integer = 2,
}
const HANDLE_RAW = 1 << 2;
const CSRF_RAW = 1 << 0;
const HAS_REST = 1 << 5;

/**
 * The base64url text of exactly 16 bytes (newHandle(): handles, CSRF tokens). The last of 22
 * characters carries 2 bits and 4 zero bits, so only A, Q, g, w can end it; any other text
 * would not come back the same from the raw bytes, and is stored as a string instead.
 */
const CANONICAL_128 = /^[A-Za-z0-9_-]{21}[AQgw]$/;
const RAW_128_BYTES = 16;
/** Integers a zigzag varint carries exactly (times beyond it would be past the year 144,000). */
const ZIGZAG_LIMIT = 2 ** 52;
const UINT32_LIMIT = 2 ** 32;

/**
 * Shared by every call (encoding is synchronous); each record is copied out of it, so it is
 * one allocation per record.
 */
const writer = new RecordWriter(4096);

/**
 * `codec` only for data at rest that is not plain JSON (encryption): its text replaces the usual
 * encoding. Throws RangeError for a record no store should hold (negative or fractional times,
 * a version outside uint32, an unknown backend).
 */
export function encodeRecord(r: SessionRecord, codec?: DataCodec): Buffer {
  const backend = BACKENDS.indexOf(r.backend);
  if (backend < 0) throw new RangeError(`unknown backend ${String(r.backend)}`);
  if (!Number.isInteger(r.version) || r.version < 0 || r.version >= UINT32_LIMIT) throw new RangeError(`session version ${r.version} is not a uint32`);
  if (!Number.isSafeInteger(r.userId) || r.userId < 0) throw new RangeError(`user id ${r.userId} is not a non-negative integer`);
  for (const t of [r.createdAt, r.issuedAt, r.lastActivity, r.expiresAt, r.absoluteExpiresAt]) {
    if (!Number.isInteger(t) || t < 0 || t >= ZIGZAG_LIMIT) throw new RangeError(`session time ${t} is not a ms timestamp`);
  }
  const handleRaw = CANONICAL_128.test(r.handle);
  if (!handleRaw && LONE_SURROGATE.test(r.handle)) throw new RangeError('session handle is not well-formed Unicode');
  const kind = codec ? DataKind.Sealed : isUsualData(r.data, r.userId) ? DataKind.Usual : DataKind.Json;

  const w = writer;
  w.reset();
  w.byte(RECORD_FORMAT);
  w.uint32(r.version);
  w.byte(backend | (handleRaw ? HANDLE_RAW : 0) | (kind << 3));
  if (handleRaw) w.raw(r.handle, RAW_128_BYTES);
  else w.string(r.handle);
  w.varint(r.userId);
  w.varint(r.createdAt);
  w.zigzag(r.issuedAt - r.createdAt);
  w.zigzag(r.lastActivity - r.issuedAt);
  w.zigzag(r.expiresAt - r.lastActivity);
  w.zigzag(r.absoluteExpiresAt - r.createdAt);
  if (kind === DataKind.Usual) writeUsualData(w, r.data);
  else w.tail(kind === DataKind.Sealed ? codec!.encode(r.data) : JSON.stringify(r.data));
  return w.copy();
}

/**
 * The session in `value`, or undefined for anything that is not one in this format (another
 * format, truncated or garbled bytes, data the codec cannot open). Never throws. `id` and
 * `idHash` are not stored: the caller knows them (the key is derived from idHash).
 */
export function decodeRecord(value: Buffer, id: string, idHash: string, codec?: DataCodec): SessionRecord | undefined {
  if (value.length < VERSION_OFFSET + 5 || value[0] !== RECORD_FORMAT) return undefined; // format, version, flags at least
  try {
    const r = new RecordReader(value, VERSION_OFFSET);
    const version = r.uint32();
    const flags = r.byte();
    const backend = BACKENDS[flags & 3];
    const kind = (flags >> 3) & 3;
    if (!backend) return undefined;
    const handle = flags & HANDLE_RAW ? r.raw(RAW_128_BYTES) : r.string();
    const userId = r.varint();
    const createdAt = r.varint();
    const issuedAt = createdAt + r.zigzag();
    const lastActivity = issuedAt + r.zigzag();
    const expiresAt = lastActivity + r.zigzag();
    const absoluteExpiresAt = createdAt + r.zigzag();
    let data: unknown;
    if (kind === DataKind.Usual) data = readUsualData(r, userId);
    else if (kind === DataKind.Json) data = JSON.parse(r.tail());
    else if (kind === DataKind.Sealed && codec) data = codec.decode(r.tail());
    if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
    return { id, idHash, handle, userId, backend, data: data as SessionData, createdAt, issuedAt, lastActivity, expiresAt, absoluteExpiresAt, ip: '', userAgent: '', version };
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ the usual data

/**
 * `{csrfToken, user: {id, email, name, role}, platformId?, ...rest}` with the keys in that
 * order (so the object comes back identical, JSON text included) and user.id equal to the
 * record's userId (so it is not stored twice). Anything else goes as JSON.
 */
function isUsualData(data: SessionData, userId: number): boolean {
  const keys = Object.keys(data);
  if (keys[0] !== 'csrfToken' || keys[1] !== 'user') return false;
  if (keys.indexOf('platformId', 2) > 2) return false;
  const { csrfToken, user, platformId } = data;
  if (typeof csrfToken !== 'string' || LONE_SURROGATE.test(csrfToken)) return false;
  if (platformId !== undefined && platformId !== null && !(Number.isInteger(platformId) && Math.abs(platformId) < ZIGZAG_LIMIT)) return false;
  if (typeof user !== 'object' || user === null) return false;
  const userKeys = Object.keys(user);
  if (userKeys.length !== 4 || userKeys[0] !== 'id' || userKeys[1] !== 'email' || userKeys[2] !== 'name' || userKeys[3] !== 'role') return false;
  if (user.id !== userId || typeof user.email !== 'string' || typeof user.name !== 'string' || typeof user.role !== 'string') return false;
  return !LONE_SURROGATE.test(user.email) && !LONE_SURROGATE.test(user.name) && !LONE_SURROGATE.test(user.role);
}

/**
 * One flags byte — CSRF token raw (bit 0), role (bits 1–2), platformId (bits 3–4), rest
 * present (bit 5) — then the CSRF token (16 raw bytes or a string), email, name, the role when
 * neither 'user' nor 'admin', platformId when an integer (zigzag), and the other keys as one
 * JSON object to the end.
 */
function writeUsualData(w: RecordWriter, data: SessionData) {
  const { csrfToken, user, platformId, ...rest } = data;
  const csrfRaw = CANONICAL_128.test(csrfToken);
  const role = user.role === 'user' ? Role.User : user.role === 'admin' ? Role.Admin : Role.Other;
  const platform = platformId === undefined ? Platform.Absent : platformId === null ? Platform.Null : Platform.Integer;
  const hasRest = Object.keys(rest).length > 0;
  w.byte((csrfRaw ? CSRF_RAW : 0) | (role << 1) | (platform << 3) | (hasRest ? HAS_REST : 0));
  if (csrfRaw) w.raw(csrfToken, RAW_128_BYTES);
  else w.string(csrfToken);
  w.string(user.email);
  w.string(user.name);
  if (role === Role.Other) w.string(user.role);
  if (platform === Platform.Integer) w.zigzag(platformId!);
  if (hasRest) w.tail(JSON.stringify(rest));
}

function readUsualData(r: RecordReader, userId: number): SessionData | undefined {
  const flags = r.byte();
  const role = (flags >> 1) & 3;
  const platform = (flags >> 3) & 3;
  const csrfToken = flags & CSRF_RAW ? r.raw(RAW_128_BYTES) : r.string();
  const email = r.string();
  const name = r.string();
  const user = { id: userId, email, name, role: role === Role.User ? 'user' : role === Role.Admin ? 'admin' : r.string() };
  const data: SessionData = { csrfToken, user };
  if (platform === Platform.Null) data.platformId = null;
  else if (platform === Platform.Integer) data.platformId = r.zigzag();
  else if (platform !== Platform.Absent) return undefined;
  if (!(flags & HAS_REST)) return r.atEnd() ? data : undefined; // trailing bytes: not what was written
  const rest: unknown = JSON.parse(r.tail());
  if (typeof rest !== 'object' || rest === null || Array.isArray(rest)) return undefined;
  // Key by key onto `data`, not `{ ...data, ...rest }`: once optimised, V8 gives every object
  // made by a spread and then grown by more keys a hidden class of its own, allocated in the old
  // generation — at one per read of a session holding anything beyond the usual keys, a full
  // mark-compact every two or three seconds under load (docs/performance.md, sixth round).
  // defineProperty keeps a "__proto__" key a plain key, as JSON.parse made it.
  for (const [key, value] of Object.entries(rest)) {
    if (key === '__proto__') Object.defineProperty(data, key, { value, writable: true, enumerable: true, configurable: true });
    else data[key] = value;
  }
  return data;
}
