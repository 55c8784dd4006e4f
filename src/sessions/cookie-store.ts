/**
 * Sessions sealed (AES-256-GCM, see sealer.ts) into the cookie itself: nothing is stored
 * server-side per session. The first secret seals; every secret opens (key rotation). What is
 * sealed is the compact form of cookie-format.ts, without IP and User-Agent.
 *
 * A cookie cannot be taken back from a browser, so ending a session means remembering that it
 * ended: `destroy` records the session (by id hash) in the revocation list, and `load` refuses revoked ones.
 *
 * Nor can a cookie be compared with what another request of the same session saved meanwhile:
 * the browser keeps whichever cookie came last. So this store remembers the seals it made of
 * late (`latest`): a save over a version older than this instance's latest seal of the session
 * is refused (SessionConflictError, carrying that seal's session, on which the caller merges its
 * changes: SessionBackends.saveMerging), and a cookie older than that seal is served as the
 * newer session, to be given its cookie again (`SessionRecord.newerThanCookie`). Only on this instance:
 * another one's seals are not known here.
 */
import { decodeSession, encodeSession } from './cookie-format.js';
import { hashSessionId, movedVersion, type SessionRecord } from './session.js';
import type { RevocationList } from './revocations.js';
import { SessionConflictError, SessionTooLargeError } from './errors.js';
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

/**
 * How long a seal made here is remembered as its session's latest (`latest`): far longer than
 * requests made at the same time take, and long enough for the browser's next request to bring
 * the cookie of whichever response came last. Timed on the monotonic clock: a step of the wall
 * clock neither keeps seals nor drops them.
 */
export const LATEST_SEAL_MS = 10_000;
/**
 * How many sessions' latest seals are remembered. A seal's plaintext is at most about 2.8 KB
 * (MAX_SEALED_LENGTH characters of base64url, less IV and tag), so about 30 MB at the very
 * most, and about 4 MB for sessions of the usual size (≈ 300 bytes sealed compactly) plus the
 * map's own ≈ 150 bytes an entry. Past it the oldest go first: under more than 1,000 session
 * writes a second, a seal is remembered less than LATEST_SEAL_MS.
 */
export const LATEST_SEALS = 10_000;

/**
 * A seal this store made (`CookieStore.latest`): its plaintext, so that a request that brings an
 * older cookie (the usual case for a client that does not keep the cookies it is given) costs no
 * second AES open.
 */
interface LatestSeal {
  /** None: the session moved out of this backend (`evict`), into version `movedInto`. */
  plain: Buffer | undefined;
  /** Saves over a version older than this are refused: for a move out, past any seal made here before it. */
  version: number;
  /**
   * For a move out: the version the move wrote where it went (`movedVersion` of the version it
   * read here). `version` may be past it, by the seals made here since the mover read it, which it
   * carries over (SessionBackends.carryOver) at a version of its own.
   */
  movedInto?: number;
  /** performance.now() when it was made. */
  at: number;
}

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
   * The latest seal made here of each session written lately, by id hash, in the order they
   * were made (so that forgetting stops at the first young one); see the top of this file.
   */
  private readonly latest = new Map<string, LatestSeal>();

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
    const record = this.opens(token);
    if (!record) return undefined;
    // A cookie older than a seal made here since (the browser kept the cookie of a response
    // that came after the newer one's): the session is the newer seal, and the browser is
    // given it again. One lookup on the usual read.
    const newer = this.latest.size === 0 ? undefined : this.newerSeal(record.idHash, record.version);
    const served = newer?.plain && this.decoded(newer.plain);
    if (served) served.newerThanCookie = true;
    // Moved out since this seal (a request sent before the browser had the move's cookie): the
    // seal is served only where the session's new place cannot be asked (backends.open).
    else if (newer && !newer.plain) record.movedOut = true;
    return this.revocations.isRevoked(record) ? undefined : served || record;
  }

  /** The session `token` seals, if it opens, is live and bound to this deployment; revoked or not. */
  private opens(token: string): SessionRecord | undefined {
    const plain = token.length <= MAX_SEALED_LENGTH ? this.open(token) : undefined;
    const record = plain && this.decoded(plain);
    if (!record || (record.issuedAt >= this.unboundBefore && this.sealer.sealedForOldPurpose(token))) return undefined;
    return record;
  }

  /** The session of a seal's plaintext, afresh (no request shares objects with another), if it is live; revoked or not. */
  private decoded(plain: Buffer): SessionRecord | undefined {
    const sealed = decodeSession(plain);
    if (!sealed || sealed.expiresAt <= Date.now()) return undefined;
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
    return record;
  }

  /** A session starts here (or moves in): its seal is its latest, whatever was remembered of its id. */
  async create(record: SessionRecord): Promise<string> {
    return this.seal(record, true);
  }

  /**
   * With `expectedVersion`: refused (SessionConflictError with the session as this instance
   * last sealed it) when a newer version was sealed here since — or without it, when the
   * session has moved out of this backend since (the caller finds it where it went). What
   * another instance sealed is not known here, and is overwritten as before.
   */
  async save(record: SessionRecord, expectedVersion?: number): Promise<string | undefined> {
    if (this.revocations.isRevoked(record)) return undefined;
    if (expectedVersion !== undefined && this.latest.size !== 0) {
      const newer = this.newerSeal(record.idHash, expectedVersion);
      if (newer) throw new SessionConflictError(expectedVersion, newer.plain && this.decoded(newer.plain));
    }
    return this.seal(record, false);
  }

  /**
   * A touch of a version older than one sealed here since (a request that read the session
   * before another's save) touches that newer one: sealed as it was read, the touch would give
   * the browser a cookie without the other request's change. So does a touch of the very version
   * sealed here last: a touch changes nothing, and what it read may be another state of that
   * version (a directory entry a move into the cookie wrote before its seal, from an entry that
   * lagged behind a tab's seal of that version: SessionBackends.move's refused read) — sealed, it
   * replaced that tab's seal, with its change answered 200
   * (test/switching/follow-into-cookie-entry-twin.test.ts). One of a session that has moved out
   * since writes nothing: the browser keeps the cookie of where it went.
   */
  async touch(record: SessionRecord): Promise<string | undefined> {
    const newer = this.latest.size === 0 ? undefined : this.newerSeal(record.idHash, record.version - 1);
    if (newer && !newer.plain) return undefined;
    const current = newer?.plain && this.decoded(newer.plain);
    return this.save(current ? { ...current, lastActivity: record.lastActivity, expiresAt: record.expiresAt } : record);
  }

  /**
   * Nothing to write when the id is on the list already (the app revokes before it destroys):
   * written again here, the revocation's database write ran under the cookie's deadline, and a
   * slow database was counted as the cookie backend timing out.
   */
  async destroy(record: SessionRecord): Promise<void> {
    this.latest.delete(record.idHash);
    if (this.revocations.isSessionIdRevoked(record.idHash)) return;
    await this.revocations.revokeSession(record.idHash, record.absoluteExpiresAt);
  }

  /**
   * A sealed cookie has nothing to compare a move against but the seals made here: one of the
   * version the mover read, or newer, means the session is in the cookie already, saved since its
   * database copy (written behind) was read — a tab whose cookie still names the database moving
   * it in again. Refused as a save would be, with that session (SessionBackends.move writes the
   * mover's changes there); moved in, its older copy would replace that seal.
   *
   * Nor over a move out of the cookie into a version newer than the mover read: the mover read
   * a copy older than the one that move wrote (a directory entry that lagged behind the seals,
   * and that it has just written over, at a version the move out had read here, before that
   * move wrote it again). Moved in, its copy would replace the session that move wrote, with
   * every change since. Refused as the directory refuses (undefined): the mover reads the
   * session where it now is and moves that (SessionBackends.move). A mover that read the moved
   * copy, or a later one, moves it back in, even while a carry-over of seals made here before
   * the move out is on its way (`version` past `movedInto`): that carry-over follows it here.
   */
  async moveIn(record: SessionRecord, readVersion: number): Promise<string | undefined> {
    // A seal of the very version the mover read counts too: what it read may be another state of
    // that version (the entry a move refused here wrote, from a lagging entry: SessionBackends.move).
    const newer = this.latest.size === 0 ? undefined : this.newerSeal(record.idHash, readVersion - 1);
    if (newer && !newer.plain && newer.movedInto !== undefined && newer.movedInto > readVersion) return undefined;
    const current = newer?.plain && this.decoded(newer.plain);
    if (current) throw new SessionConflictError(readVersion, current);
    return this.create(record);
  }

  /**
   * The cookie is replaced by the destination's; there is nothing to remove. What is remembered
   * is that it moved: a request that read it here before (the flag flipped back for it) and
   * saves here is refused, and follows it (SessionBackends.saveMerging), rather than seal a
   * cookie that the browser may keep in place of the moved session's, with only its change.
   * A seal made here since the mover read it (`record`'s version) holds such requests' changes:
   * it is refused as a save would be (SessionConflictError with that session), for the mover to
   * carry them over (SessionBackends.move).
   *
   * `unlessSealedPast`: the version of the directory entry a refused move read, naming another
   * holder (SessionBackends.moveTried). A seal made here past it is of a session that came back
   * into the cookie since that entry (a move in writes a version past the entry it read): it is
   * the session, and nothing is marked (false).
   */
  async evict(record: SessionRecord, unlessSealedPast?: number): Promise<boolean | void> {
    const newer = this.latest.size === 0 ? undefined : this.newerSeal(record.idHash, record.version);
    if (unlessSealedPast !== undefined && newer?.plain && newer.version > unlessSealedPast) return false;
    // Past any seal made here since the mover read it: a save over any of them is refused too.
    this.keep(record.idHash, { plain: undefined, version: Math.max(record.version, newer?.version ?? 0) + 1, movedInto: movedVersion('cookie', record.version), at: performance.now() });
    const sealed = newer?.plain && this.decoded(newer.plain);
    if (sealed) throw new SessionConflictError(record.version, sealed);
  }

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

  private seal(record: SessionRecord, starts: boolean): string {
    const plain = encodeSession(record);
    const sealed = this.sealer.sealBytes(plain);
    if (sealed.length > MAX_SEALED_LENGTH) throw new SessionTooLargeError(sealed.length, MAX_SEALED_LENGTH);
    // A copy: the encoder reuses its buffer.
    this.remember(record, Buffer.from(plain), starts);
    return sealed;
  }

  /**
   * A seal made of `record`, as its session's latest: unless a newer version was sealed here
   * since (a save without a version to compare, after a concurrent one), where it `starts`.
   */
  private remember(record: SessionRecord, plain: Buffer, starts: boolean) {
    const now = performance.now();
    const known = this.latest.get(record.idHash);
    if (!starts && known && known.version > record.version && now - known.at < LATEST_SEAL_MS) return;
    this.keep(record.idHash, { plain, version: record.version, at: now });
  }

  /** `seal` as the session's latest; the oldest forgotten past LATEST_SEALS or LATEST_SEAL_MS. */
  private keep(idHash: string, seal: LatestSeal) {
    // Deleted first so that the map stays in the order of `at`.
    if (!this.latest.delete(idHash) && this.latest.size >= LATEST_SEALS) this.latest.delete(this.latest.keys().next().value!);
    this.latest.set(idHash, seal);
    for (const [key, kept] of this.latest) {
      if (seal.at - kept.at < LATEST_SEAL_MS) break;
      this.latest.delete(key);
    }
  }

  /** The seal of the session made here within LATEST_SEAL_MS, if it is of a version newer than `version`. */
  private newerSeal(idHash: string, version: number): LatestSeal | undefined {
    const seal = this.latest.get(idHash);
    return seal && seal.version > version && performance.now() - seal.at < LATEST_SEAL_MS ? seal : undefined;
  }
}
