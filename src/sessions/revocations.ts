/**
 * The revocation record: which sessions must not be served although a copy may still exist
 * somewhere — a sealed cookie in a browser, or a Redis key left behind while Redis was down.
 *
 * Three kinds of entry, each kept until no session it could match can still be alive:
 *   session — one session id (logout, revoke, rotation), by hash, until its absolute expiry;
 *   user   — every session of a user issued before `notBefore` (password change, disable, logout everywhere);
 *   all    — every session issued before `notBefore` (revoke-all).
 * Issuing one is a single row insert, O(1). Every instance holds the live entries in memory
 * and polls for new rows every SYNC_INTERVAL_MS, so the per-request check is two map lookups
 * and a comparison; another instance honours a new entry within one poll interval, or at once
 * when Redis carries the news (instance-channel.ts).
 */
import { ReplyError } from 'ioredis';
import { Op } from 'sequelize';
import { withinDeadline } from '../db/database.js';
import type { Models } from '../db/models.js';
import type { InstanceChannel } from './instance-channel.js';
import type { RevocationSpool } from './revocation-spool.js';
import type { SessionRecord } from './session.js';

export type Revocable = Pick<SessionRecord, 'idHash' | 'userId' | 'issuedAt'>;

export interface RevocationEntry {
  kind: 'session' | 'user' | 'all';
  subject: string;
  notBefore: number;
  expiresAt: number;
}

/** The channel topic entries are announced on. */
const TOPIC = 'revocations';
/** How long a revocation waits for the database before it is held in Redis instead (see `issue`). */
const REVOCATION_WRITE_MS = 2_000;

/** How long a user-wide or global revocation waits for the shared clock's time (see `notAheadOfShared`). */
const SHARED_CLOCK_WAIT_MS = 500;

/** A step of the system clock larger than this, between two polls, is one (see `pull`). */
const CLOCK_STEP_MS = 1_000;

/** How long a poll keeps looking for an id it found missing (see `pull`). */
const GAP_WAIT_MS = 60_000;
/** At most this many missing ids just below a new one are looked for: never more inserts are in flight at once. */
const GAP_SPAN = 64;

/** What tells entries apart: the same kind, subject and instant is the same revocation. */
export function revocationKey(entry: RevocationEntry): string {
  return `${entry.kind}:${entry.subject}:${entry.notBefore}`;
}

export function isRevocationEntry(value: unknown): value is RevocationEntry {
  const e = value as Partial<RevocationEntry> | null;
  return (
    typeof e === 'object' &&
    e !== null &&
    (e.kind === 'session' || e.kind === 'user' || e.kind === 'all') &&
    typeof e.subject === 'string' &&
    Number.isFinite(e.notBefore) &&
    Number.isFinite(e.expiresAt)
  );
}

export class RevocationList {
  private readonly sessions = new Map<string, number>(); // idHash → expiresAt
  /** userId → the latest user-wide revocation, kept until every session it can match has expired. */
  private readonly users = new Map<number, { notBefore: number; expiresAt: number }>();
  private allNotBefore = 0;
  private lastId = 0;
  /** Ids below `lastId` not seen yet, by when they were first missed (see `pull`). */
  private readonly gaps = new Map<number, number>();
  private loaded = false;
  /**
   * Entries issued here, or read from the spool, that the database could not take, by
   * revocationKey: written by this
   * instance at its next syncs, whether or not the spool still holds them (Redis keeps nothing
   * across its restart on these machines; the entry would then live only in the memory of the
   * instances that heard it, and be undone by their restart).
   */
  private readonly unwritten = new Map<string, RevocationEntry>();
  private timer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  /** The wall clock less the monotonic one at the last poll: a change is a step of the system clock. */
  private wallClockOffset = Date.now() - performance.now();
  /**
   * The same at start: the time as it would be had the clock never stepped. Entries are
   * forgotten only once expired by this time too, so a clock stepped forward for a while (then
   * back) forgets none early.
   */
  private readonly steadyOffset = this.wallClockOffset;
  /** Entries dated ahead of this clock, by revocationKey: the instant each was taken to mean here. */
  private readonly datedAhead = new Map<string, { notBefore: number; expiresAt: number }>();

  constructor(
    private readonly models: Models,
    private readonly options: {
      absoluteTimeoutMs: number;
      syncIntervalMs: number;
      onSyncError?: (err: unknown) => void;
      /** A revocation was dated `aheadMs` ahead of this instance's clock, or this one's of the shared clock: clocks disagree. */
      onClockAhead?: (aheadMs: number) => void;
      /** The system clock stepped by `stepMs` (negative: back) between two polls. */
      onClockStep?: (stepMs: number) => void;
      /** The time by a clock every instance shares (the database's), in epoch ms. */
      sharedClock?: () => Promise<number>;
    },
  ) {}

  /** Loads the live entries, then keeps polling for new ones. */
  async start(): Promise<void> {
    await this.sync();
    this.timer = setInterval(() => {
      this.sync().catch((err: unknown) => this.options.onSyncError?.(err));
    }, this.options.syncIntervalMs);
    this.timer.unref();
  }

  private channel: InstanceChannel | undefined;
  /**
   * From now on, entries issued here are also published on `channel`, and entries another
   * instance publishes there are applied here at once, ahead of the poll. Settles once the
   * channel is subscribed (InstanceChannel.listen).
   */
  announceOn(channel: InstanceChannel): Promise<void> {
    this.channel = channel;
    return channel.listen(TOPIC, (message) => {
      if (isRevocationEntry(message)) this.apply(message);
    });
  }

  private spool: RevocationSpool | undefined;
  /**
   * From now on, an entry the database cannot take is held in `spool` (Redis) instead, and every
   * poll applies what the spool holds and moves it into the database once it can.
   */
  holdIn(spool: RevocationSpool): void {
    this.spool = spool;
  }

  /** How many session and user entries this instance holds in memory (diagnostics, tests). */
  get heldEntries(): number {
    return this.sessions.size + this.users.size;
  }

  /** The latest revoke-all's instant (0: none yet): sessions issued before it no longer work. */
  get allRevokedBefore(): number {
    return this.allNotBefore;
  }

  isRevoked(s: Revocable): boolean {
    if (s.issuedAt < this.allNotBefore) return true;
    const user = this.users.get(s.userId);
    if (user !== undefined && s.issuedAt < user.notBefore) return true;
    return this.isSessionIdRevoked(s.idHash);
  }

  /** Whether this session id itself was ended (logout, revoke, rotation): known without its record. */
  isSessionIdRevoked(idHash: string): boolean {
    const until = this.sessions.get(idHash);
    return until !== undefined && until > Date.now();
  }

  /** This one session id stops working, wherever a copy of it remains. */
  async revokeSession(idHash: string, expiresAt: number): Promise<void> {
    await this.issue({ kind: 'session', subject: idHash, notBefore: 0, expiresAt });
  }

  /** Every session of the user issued before `notBefore` stops working. */
  async revokeUser(userId: number, notBefore = Date.now()): Promise<void> {
    const expiresAt = notBefore + this.options.absoluteTimeoutMs;
    await this.issue({ kind: 'user', subject: String(userId), notBefore: await this.notAheadOfShared(notBefore), expiresAt });
  }

  async revokeAll(notBefore = Date.now()): Promise<number> {
    const expiresAt = notBefore + this.options.absoluteTimeoutMs;
    const dated = await this.notAheadOfShared(notBefore);
    await this.issue({ kind: 'all', subject: '*', notBefore: dated, expiresAt });
    return dated;
  }

  /**
   * An instant no later than now by this clock or the shared one, and before any revocation
   * dated after this call (less a millisecond: a revocation of the same millisecond, `<`, would
   * miss it): what a login dates its session by (StartHooks.accountReadAt). By this clock alone,
   * an instance running ahead of the database's dated a login after a password change whose
   * revocation (dated by the database's clock, below) then did not cover it.
   */
  async issuedNow(): Promise<number> {
    return (await this.notAheadOfShared(Date.now())) - 1;
  }

  /**
   * `notBefore`, or the shared clock's time (the database's) if that is earlier: dated by a
   * fast clock, a user-wide or global revocation refused every session issued elsewhere — and,
   * once held by every instance, on this one too — for as long as the clocks were apart, and a
   * restart dated it again. The shared clock not answering, this one's stands.
   */
  private async notAheadOfShared(notBefore: number): Promise<number> {
    if (!this.options.sharedClock) return notBefore;
    let shared: number;
    try {
      shared = await withinDeadline(this.options.sharedClock(), SHARED_CLOCK_WAIT_MS, 'the time');
    } catch {
      return notBefore;
    }
    if (notBefore - shared > CLOCK_STEP_MS) this.options.onClockAhead?.(notBefore - shared);
    return Math.min(notBefore, shared);
  }

  /** Honoured here at once, recorded for every instance, announced to those listening. */
  private async issue(entry: RevocationEntry): Promise<void> {
    const undo = this.apply(entry);
    try {
      // A database that does not answer is down too: a logout does not wait for it.
      await withinDeadline(this.models.Revocation.create(entry), REVOCATION_WRITE_MS, 'a revocation');
    } catch (err) {
      // The database is down: held in Redis until it is back, or, if Redis cannot take it
      // either, taken back here too and the database's error goes to the caller (a 503: the
      // logout did not happen, anywhere — not half, on this instance only).
      try {
        if (!this.spool) throw err;
        await this.spool.hold(entry);
      } catch {
        undo();
        throw err;
      }
      this.unwritten.set(revocationKey(entry), entry);
    }
    await this.channel?.publish(TOPIC, entry);
  }

  /** Reads what the spool holds, then rows newer than the last seen; one sync at a time. */
  sync(): Promise<void> {
    this.syncing ??= this.unspool()
      .then(() => this.writeUnwritten())
      .then(() => this.pull())
      .finally(() => {
        this.syncing = undefined;
      });
    return this.syncing;
  }

  /**
   * Stops polling; settles once a poll in flight has finished (before its database closes).
   * Entries the database has still not taken are held in the spool once more: this instance's
   * memory of them ends here.
   */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.syncing?.catch(() => undefined);
    await this.holdUnwritten();
  }

  /**
   * Applies the entries held in the spool, and moves each into the database, where the
   * instances that start later look. Neither Redis nor the database being down is an error here:
   * the entries wait for the next poll. Those the database does not take yet are kept here as
   * well (`unwritten`), as the issuing instance keeps its own: if Redis then loses the hash and
   * that instance is killed, every instance that read them still writes them once it can.
   */
  private async unspool(): Promise<void> {
    if (!this.spool) return;
    const held = await this.spool.held().catch((err: unknown) => {
      // Redis down is reported where the connection is; Redis refusing (an ACL without the hash
      // commands) would leave logouts held during a database outage unread, unexplained.
      if (err instanceof ReplyError) this.options.onSyncError?.(err);
      return [];
    });
    const now = Date.now();
    const live = held.filter((entry) => entry.expiresAt > now);
    for (const entry of live) this.apply(entry);
    for (const entry of held) {
      if (entry.expiresAt > now) {
        try {
          await this.models.Revocation.create(entry);
        } catch {
          for (const waiting of live.slice(live.indexOf(entry))) this.unwritten.set(revocationKey(waiting), waiting);
          return;
        }
      }
      this.unwritten.delete(revocationKey(entry));
      await this.spool.release(entry).catch(() => undefined);
    }
  }

  /** Writes the entries the database could not take (see `unwritten`). */
  private async writeUnwritten(): Promise<void> {
    const now = Date.now();
    // Expired ones first, all of them: a database that stays down must not keep them in memory.
    for (const [key, entry] of this.unwritten) if (entry.expiresAt <= now) this.unwritten.delete(key);
    for (const [key, entry] of this.unwritten) {
      try {
        await withinDeadline(this.models.Revocation.create(entry), REVOCATION_WRITE_MS, 'a revocation');
      } catch {
        await this.holdUnwritten();
        return;
      }
      this.unwritten.delete(key);
      await this.spool?.release(entry).catch(() => undefined);
    }
  }

  /**
   * The database still cannot take them: they are held in the spool again, at every poll. Redis
   * may have lost the hash since (a restart without persistence, an eviction under an
   * `allkeys-*` policy), and then only this instance's memory would have them, until it stops.
   * Holding an entry the hash has already changes nothing.
   */
  private async holdUnwritten(): Promise<void> {
    if (!this.spool) return;
    for (const entry of this.unwritten.values()) await this.spool.hold(entry).catch(() => undefined);
  }

  /** Deletes entries that can no longer match a live session at `now`. */
  async prune(now = Date.now()): Promise<number> {
    return this.models.Revocation.destroy({ where: { expiresAt: { [Op.lte]: now } } });
  }

  /**
   * Ids are drawn when a row is inserted, not when it commits: on PostgreSQL two revocations
   * written at once can commit out of order, and a poll between the two commits sees the later
   * id first. So an id found missing just below a new one is looked for again, from the oldest
   * such, for GAP_WAIT_MS (a rolled-back insert leaves a gap for good); an entry read twice
   * changes nothing. The first load records no gaps: older holes are pruned or expired rows.
   */
  private async pull(): Promise<void> {
    const now = Date.now();
    // A clock stepped forward forgot (below) the entries that seemed to have expired; stepped
    // back, they match live sessions again: a logged-out cookie would work here until a
    // restart. So after a step every live entry is read again.
    const offset = now - performance.now();
    if (Math.abs(offset - this.wallClockOffset) > CLOCK_STEP_MS) {
      this.options.onClockStep?.(offset - this.wallClockOffset);
      this.lastId = 0;
      this.gaps.clear();
      this.loaded = false;
    }
    this.wallClockOffset = offset;
    for (const [id, since] of this.gaps) if (now - since > GAP_WAIT_MS) this.gaps.delete(id);
    let after = this.gaps.size > 0 ? Math.min(...this.gaps.keys()) - 1 : this.lastId;
    for (;;) {
      const rows = await this.models.Revocation.findAll({
        where: { id: { [Op.gt]: after }, expiresAt: { [Op.gt]: now } },
        order: [['id', 'ASC']],
        limit: 1000,
      });
      for (const row of rows) {
        this.apply(row);
        this.gaps.delete(row.id);
        if (this.loaded) for (let id = Math.max(this.lastId + 1, row.id - GAP_SPAN); id < row.id; id++) this.gaps.set(id, now);
        this.lastId = Math.max(this.lastId, row.id);
        after = row.id;
      }
      if (rows.length < 1000) break;
    }
    this.loaded = true;
    const expiredBy = Math.min(now, this.steadyOffset + performance.now());
    for (const [idHash, until] of this.sessions) if (until <= expiredBy) this.sessions.delete(idHash);
    for (const [userId, { expiresAt }] of this.users) if (expiresAt <= expiredBy) this.users.delete(userId);
    for (const [key, { expiresAt }] of this.datedAhead) if (expiresAt <= expiredBy) this.datedAhead.delete(key);
  }

  /**
   * The instant a user or revoke-all entry takes effect here. One dated ahead of this clock was
   * issued on an instance whose clock is fast: taken as dated when it arrived, since every
   * session this instance issued until then is older, and none it issues later is. (Dated as
   * it came, it refused every session issued here for as long as the clocks are apart: logins
   * that worked once and then answered 401.) Once, per entry: a held entry read again at each
   * poll keeps the instant it was first given.
   */
  private effectiveNotBefore(entry: RevocationEntry): number {
    const now = Date.now();
    if (entry.notBefore <= now) return entry.notBefore;
    const key = revocationKey(entry);
    let taken = this.datedAhead.get(key);
    if (!taken) {
      this.options.onClockAhead?.(entry.notBefore - now);
      this.datedAhead.set(key, (taken = { notBefore: now, expiresAt: entry.expiresAt }));
    }
    return taken.notBefore;
  }

  /** Honours `entry` here; returns what puts back the state before it (unless changed since). */
  private apply(entry: RevocationEntry): () => void {
    if (entry.kind === 'session') {
      const before = this.sessions.get(entry.subject);
      const now = Math.max(entry.expiresAt, before ?? 0);
      this.sessions.set(entry.subject, now);
      return () => {
        if (this.sessions.get(entry.subject) !== now) return;
        if (before === undefined) this.sessions.delete(entry.subject);
        else this.sessions.set(entry.subject, before);
      };
    }
    if (entry.kind === 'user') {
      const userId = Number(entry.subject);
      const before = this.users.get(userId);
      const now = { notBefore: Math.max(this.effectiveNotBefore(entry), before?.notBefore ?? 0), expiresAt: Math.max(entry.expiresAt, before?.expiresAt ?? 0) };
      this.users.set(userId, now);
      return () => {
        if (this.users.get(userId) !== now) return;
        if (before === undefined) this.users.delete(userId);
        else this.users.set(userId, before);
      };
    }
    if (entry.kind === 'all') {
      const before = this.allNotBefore;
      this.allNotBefore = Math.max(before, this.effectiveNotBefore(entry));
      const now = this.allNotBefore;
      return () => {
        if (this.allNotBefore === now) this.allNotBefore = before;
      };
    }
    return () => undefined;
  }
}
