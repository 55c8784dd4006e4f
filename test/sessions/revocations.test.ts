import { expect } from 'chai';
import { Redis } from 'ioredis';
import { RevocationSpool } from '../../src/sessions/revocation-spool.js';
import { RevocationList } from '../../src/sessions/revocations.js';
import { freePort } from '../support/ports.js';
import { ABSOLUTE_MS, makeRecord, postgresDb, sqliteDb, type TestDb } from './fixtures.js';

describe('the revocation list', () => {
  let db: TestDb;
  let here: RevocationList;
  let there: RevocationList;
  before(async () => {
    db = await sqliteDb();
    here = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    there = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    await here.start();
    await there.start();
  });
  after(async () => {
    here.stop();
    there.stop();
    await db.close();
  });

  it('revokes every session of a user issued before the epoch, and none issued at or after it', async () => {
    const userId = 77;
    const epoch = Date.now();
    const before = makeRecord({ userId, issuedAt: epoch - 1 });
    const at = makeRecord({ userId, issuedAt: epoch });
    const otherUser = makeRecord({ issuedAt: epoch - 1 });
    await here.revokeUser(userId, epoch);
    expect(here.isRevoked(before)).to.equal(true);
    expect(here.isRevoked(at)).to.equal(false);
    expect(here.isRevoked(otherUser)).to.equal(false);
    expect(there.isRevoked(before)).to.equal(false, 'not yet synced');
    await there.sync();
    expect(there.isRevoked(before)).to.equal(true);
  });

  it('revoke-all is one row, and everything issued before it is refused on every instance', async () => {
    const old = makeRecord({ issuedAt: Date.now() - 10 });
    const count = await db.models.Revocation.count();
    const before = await here.revokeAll();
    expect(await db.models.Revocation.count()).to.equal(count + 1);
    const newer = makeRecord({ issuedAt: before + 1 });
    await there.sync();
    for (const list of [here, there]) {
      expect(list.isRevoked(old)).to.equal(true);
      expect(list.isRevoked(newer)).to.equal(false);
    }
  });

  it('takes a revocation dated ahead of its clock (another instance’s clock is fast) as dated when it came: what it issues later still works', async () => {
    const aheads: number[] = [];
    const slow = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000, onClockAhead: (ms) => aheads.push(ms) });
    await slow.start();
    const userId = 4242;
    const issuedBefore = makeRecord({ userId, issuedAt: Date.now() - 1 });
    const rows = await Promise.all([
      db.models.Revocation.create({ kind: 'user', subject: String(userId), notBefore: Date.now() + 2 * 3_600_000, expiresAt: Date.now() + ABSOLUTE_MS }),
      db.models.Revocation.create({ kind: 'all', subject: '*', notBefore: Date.now() + 2 * 3_600_000, expiresAt: Date.now() + ABSOLUTE_MS }),
    ]);
    try {
      await slow.sync();
      await slow.sync(); // read again: the instant it was given stays
      await new Promise((resolve) => setTimeout(resolve, 5));
      const issuedAfter = makeRecord({ userId, issuedAt: Date.now() });
      expect(slow.isRevoked(issuedBefore), 'issued here before it came').to.equal(true);
      expect(slow.isRevoked(issuedAfter), 'issued here after it came').to.equal(false);
      expect(slow.isRevoked(makeRecord({ issuedAt: Date.now() })), 'another user’s, issued after').to.equal(false);
      expect(aheads.length, 'said, once per entry').to.equal(2);
      expect(aheads[0]).to.be.above(3_500_000);
    } finally {
      await slow.stop();
      await Promise.all(rows.map((row) => row.destroy()));
    }
  });

  it('reads every live entry again after the system clock stepped: one that seemed expired while it was ahead holds once it is back', async () => {
    const steps: number[] = [];
    const list = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000, onClockStep: (ms) => steps.push(ms) });
    await list.start();
    const loggedOut = makeRecord({ issuedAt: Date.now() });
    await here.revokeSession(loggedOut.idHash, Date.now() + 3_600_000);
    const realNow = Date.now;
    try {
      await list.sync();
      expect(list.isRevoked(loggedOut)).to.equal(true);
      const dayAhead = realNow() + 86_400_000;
      Date.now = () => dayAhead;
      await list.sync(); // a day ahead, the entry looks expired (but is kept: the monotonic clock did not move)
      Date.now = realNow;
      expect(list.isRevoked(loggedOut), 'the logged-out session, the clock back, before any poll').to.equal(true);
      await list.sync();
      expect(list.isRevoked(loggedOut), 'the logged-out session, the clock back').to.equal(true);
      expect(steps.map((ms) => Math.sign(ms))).to.deep.equal([1, -1]);
    } finally {
      Date.now = realNow;
      await list.stop();
    }
  });

  it('lets go of the user-wide entries in memory once every session they could end has expired', async () => {
    const short = new RevocationList(db.models, { absoluteTimeoutMs: 200, syncIntervalMs: 60_000 });
    await short.start();
    try {
      const held = short.heldEntries;
      // Issued before the revocation, whatever the two writes take on a busy machine.
      const issuedBefore = Date.now() - 1;
      await short.revokeUser(901);
      await short.revokeSession('short-lived-id', Date.now() + 200);
      expect(short.heldEntries).to.equal(held + 2);
      expect(short.isRevoked(makeRecord({ userId: 901, issuedAt: issuedBefore }))).to.equal(true);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await short.sync();
      expect(short.heldEntries, 'a service up for months would otherwise hold one per user ever logged out everywhere').to.equal(held);
    } finally {
      await short.stop();
    }
  });

  it('forgets entries that can no longer match a live session', async () => {
    await db.models.Revocation.create({ kind: 'session', subject: 'expired-entry', notBefore: 0, expiresAt: Date.now() - 1 });
    expect(await here.prune()).to.be.greaterThan(0);
    expect(await db.models.Revocation.count({ where: { subject: 'expired-entry' } })).to.equal(0);
  });
});

describe('the revocation list on PostgreSQL, written by several instances at once', () => {
  let db: TestDb;
  before(async () => {
    db = await postgresDb();
  });
  after(() => db?.close());

  it('finds an entry whose insert committed after a later one was already polled', async () => {
    const list = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    await list.start();
    const early = makeRecord();
    const late = makeRecord();
    const entry = (record: typeof early) => ({ kind: 'session' as const, subject: record.idHash, notBefore: 0, expiresAt: record.absoluteExpiresAt });
    // One instance's insert draws its id and is slow to commit; another's draws the next id and commits.
    const slow = await db.sequelize.transaction();
    await db.models.Revocation.create(entry(early), { transaction: slow });
    await db.models.Revocation.create(entry(late));
    await list.sync();
    expect(list.isRevoked(late)).to.equal(true);
    expect(list.isRevoked(early)).to.equal(false, 'not committed yet');
    await slow.commit();
    await list.sync();
    expect(list.isRevoked(early)).to.equal(true, 'the poll went back for the missing id');
    list.stop();
  });

  it('takes an entry back when neither the database nor Redis could record it: nothing half-done on this instance', async () => {
    const dbDown = await sqliteDb();
    const list = new RevocationList(dbDown.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    await list.start();
    await dbDown.close(); // the database is gone
    // A real client of a Redis that is not there: every command fails at once.
    const redis = new Redis(await freePort(), '127.0.0.1', { enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    redis.on('error', () => undefined);
    list.holdIn(new RevocationSpool(redis, 'nowhere:revocations:held'));
    const session = makeRecord({ userId: 9 });
    const earlier = makeRecord({ userId: 9, issuedAt: Date.now() - 1000 });
    await list.revokeSession(session.idHash, session.absoluteExpiresAt).then(
      () => expect.fail('the logout cannot have held'),
      () => undefined,
    );
    await list.revokeUser(9).catch(() => undefined);
    await list.revokeAll().catch(() => undefined);
    expect(list.isRevoked(session), 'the session goes on, here as everywhere').to.equal(false);
    expect(list.isRevoked(earlier)).to.equal(false);
    await list.stop();
    redis.disconnect();
  });
});

