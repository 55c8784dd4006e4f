/**
 * The plaintext inside a sealed session cookie. The browser sends the cookie with every
 * request and the server opens it on every request, so the form is binary and positional:
 * a typical session is about 140 bytes, against about 540 as JSON of the record.
 *
 * Format 1 (every integer a LEB128 varint; "signed" ones zigzag-encoded):
 *
 *   1            format
 *   flags        see the constants below
 *   id           32 raw bytes (ID_RAW), else a string
 *   handle       16 raw bytes (HANDLE_RAW), else a string
 *   numbers      userId, createdAt, then issuedAt, lastActivity, expiresAt and absoluteExpiresAt
 *                as differences from createdAt, then version: signed varints (INTEGERS), else
 *                seven float64s — exact either way
 *   data         USUAL_DATA: csrfToken (16 raw bytes with CSRF_RAW, else a string), user.id
 *                (signed), user.email, user.name, user.role, platformId (0 absent, 1 null, 2 a
 *                signed varint follows), then the other keys as a JSON object (empty when none);
 *                else the whole data as JSON
 *   string       varint (UTF-8 length × 2, + 1 when the bytes are the string's JSON instead: a
 *                lone surrogate does not survive UTF-8) and the bytes
 *
 * Not in it: `ip` and `userAgent` (they load as ''). The database copy of every cookie session
 * keeps them from login for the sessions list; serving a request never needs them.
 *
 * Cookies sealed before format 1 hold the record as JSON, so they start with `{`: they still
 * open, and the next write re-seals them in format 1.
 */
import { RecordReader, RecordWriter } from './binary-record.js';
import type { SessionData, SessionRecord } from './session.js';

/** What the cookie carries: a record without what is derived from it or implied by it. */
export type SealedSession = Omit<SessionRecord, 'idHash' | 'backend'>;

const FORMAT_1 = 1;
const LEGACY_JSON = 0x7b; // '{'

const ID_RAW = 1;
const HANDLE_RAW = 2;
const INTEGERS = 4;
const USUAL_DATA = 8;
const CSRF_RAW = 16;

const PLATFORM_ABSENT = 0;
const PLATFORM_NULL = 1;
const PLATFORM_NUMBER = 2;

const ID_BYTES = 32;
const TOKEN_BYTES = 16;
// Canonical unpadded base64url of exactly 32 and 16 bytes: only these decode back to the same
// text, so only these may travel as raw bytes (the unused low bits of the last character are 0).
const CANONICAL_ID = /^[\w-]{42}[AEIMQUYcgkosw048]$/;
const CANONICAL_TOKEN = /^[\w-]{21}[AQgw]$/;

/** Zigzag needs twice the magnitude, and that must stay exact in a double. */
const MAX_SIGNED = 2 ** 52 - 1;
const fitsSigned = (n: unknown): n is number => Number.isInteger(n) && Math.abs(n as number) <= MAX_SIGNED;

// Encoding is synchronous, and the sealer copies the bytes out before returning, so one buffer
// serves every seal; a larger session grows it for that one call.
const SHARED_SIZE = 4096;
const shared = new RecordWriter(SHARED_SIZE);

/**
 * The record in format 1. The bytes are valid until the next call: seal them at once.
 * Throws, as JSON.stringify does, on data that is not JSON (a BigInt, a cycle).
 */
export function encodeSession(r: SealedSession): Buffer {
  shared.reset();
  write(shared, r);
  const bytes = shared.view();
  shared.shrink();
  return bytes;
}

function write(w: RecordWriter, r: SealedSession) {
  const idRaw = CANONICAL_ID.test(r.id);
  const handleRaw = CANONICAL_TOKEN.test(r.handle);
  const { createdAt } = r;
  const issued = r.issuedAt - createdAt;
  const active = r.lastActivity - createdAt;
  const expires = r.expiresAt - createdAt;
  const absolute = r.absoluteExpiresAt - createdAt;
  const integers =
    fitsSigned(r.userId) && fitsSigned(createdAt) && fitsSigned(issued) && fitsSigned(active) && fitsSigned(expires) && fitsSigned(absolute) && fitsSigned(r.version);
  const { csrfToken, user, platformId, ...rest } = r.data;
  const usual = isUsualUser(user) && typeof csrfToken === 'string' && (platformId === undefined || platformId === null || fitsSigned(platformId));
  const csrfRaw = usual && CANONICAL_TOKEN.test(csrfToken);

  w.byte(FORMAT_1);
  w.byte((idRaw ? ID_RAW : 0) | (handleRaw ? HANDLE_RAW : 0) | (integers ? INTEGERS : 0) | (usual ? USUAL_DATA : 0) | (csrfRaw ? CSRF_RAW : 0));
  if (idRaw) w.raw(r.id, ID_BYTES);
  else w.taggedString(r.id);
  if (handleRaw) w.raw(r.handle, TOKEN_BYTES);
  else w.taggedString(r.handle);
  if (integers) {
    w.zigzag(r.userId);
    w.zigzag(createdAt);
    w.zigzag(issued);
    w.zigzag(active);
    w.zigzag(expires);
    w.zigzag(absolute);
    w.zigzag(r.version);
  } else {
    for (const n of [r.userId, createdAt, r.issuedAt, r.lastActivity, r.expiresAt, r.absoluteExpiresAt, r.version]) w.float(n);
  }
  if (!usual) {
    w.taggedString(JSON.stringify(r.data));
    return;
  }
  if (csrfRaw) w.raw(csrfToken, TOKEN_BYTES);
  else w.taggedString(csrfToken);
  w.zigzag(user.id);
  w.taggedString(user.email);
  w.taggedString(user.name);
  w.taggedString(user.role);
  if (platformId === undefined) w.byte(PLATFORM_ABSENT);
  else if (platformId === null) w.byte(PLATFORM_NULL);
  else {
    w.byte(PLATFORM_NUMBER);
    w.zigzag(platformId);
  }
  let more = false;
  for (const _ in rest) {
    more = true;
    break;
  }
  w.taggedString(more ? JSON.stringify(rest) : '');
}

/** Exactly `{id, email, name, role}` with an integer id and string fields, as login writes it. */
function isUsualUser(user: unknown): user is SessionData['user'] {
  if (typeof user !== 'object' || user === null || Object.getPrototypeOf(user) !== Object.prototype) return false;
  const u = user as Record<string, unknown>;
  if (!fitsSigned(u.id) || typeof u.email !== 'string' || typeof u.name !== 'string' || typeof u.role !== 'string') return false;
  let keys = 0;
  for (const _ in u) keys++;
  return keys === 4;
}

/** The session in `plain`, in either format; `undefined` if it is neither. */
export function decodeSession(plain: Buffer): SealedSession | undefined {
  try {
    if (plain[0] === FORMAT_1) return read(new RecordReader(plain, 1));
    if (plain[0] === LEGACY_JSON) return readLegacy(plain);
  } catch {
    // Only our own seals open, so this is a format we do not know (sealed by a later version).
  }
  return undefined;
}

function read(r: RecordReader): SealedSession | undefined {
  const flags = r.byte();
  const id = flags & ID_RAW ? r.raw(ID_BYTES) : r.taggedString();
  const handle = flags & HANDLE_RAW ? r.raw(TOKEN_BYTES) : r.taggedString();
  let userId, createdAt, issuedAt, lastActivity, expiresAt, absoluteExpiresAt, version;
  if (flags & INTEGERS) {
    userId = r.zigzag();
    createdAt = r.zigzag();
    issuedAt = createdAt + r.zigzag();
    lastActivity = createdAt + r.zigzag();
    expiresAt = createdAt + r.zigzag();
    absoluteExpiresAt = createdAt + r.zigzag();
    version = r.zigzag();
  } else {
    userId = r.float();
    createdAt = r.float();
    issuedAt = r.float();
    lastActivity = r.float();
    expiresAt = r.float();
    absoluteExpiresAt = r.float();
    version = r.float();
  }
  let data: SessionData;
  if (flags & USUAL_DATA) {
    const csrfToken = flags & CSRF_RAW ? r.raw(TOKEN_BYTES) : r.taggedString();
    const user = { id: r.zigzag(), email: r.taggedString(), name: r.taggedString(), role: r.taggedString() };
    const platform = r.byte();
    if (platform !== PLATFORM_ABSENT && platform !== PLATFORM_NULL && platform !== PLATFORM_NUMBER) return undefined;
    const platformId = platform === PLATFORM_NUMBER ? r.zigzag() : null;
    const restJson = r.taggedString();
    const rest = restJson === '' ? undefined : (JSON.parse(restJson) as Record<string, unknown>);
    data = platform === PLATFORM_ABSENT ? { csrfToken, user, ...rest } : { csrfToken, user, platformId, ...rest };
  } else {
    data = JSON.parse(r.taggedString()) as SessionData;
  }
  if (!r.atEnd()) return undefined;
  return { id, handle, userId, data, createdAt, issuedAt, lastActivity, expiresAt, absoluteExpiresAt, ip: '', userAgent: '', version };
}

/** The record as JSON, IP and User-Agent included, as cookies were sealed before format 1. */
function readLegacy(plain: Buffer): SealedSession | undefined {
  const sealed = JSON.parse(plain.toString('utf8')) as SealedSession;
  if (typeof sealed.id !== 'string' || sealed.id.length < 32) return undefined;
  return sealed;
}
