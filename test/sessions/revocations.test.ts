import { expect } from 'chai';
import { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { RevocationChannel } from '../../src/sessions/revocation-channel.js';
import { RevocationList } from '../../src/sessions/revocations.js';
import { startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { ABSOLUTE_MS, makeRecord, newUserId, sqliteDb, type TestDb } from './fixtures.js';

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

  it('forgets entries that can no longer match a live session', async () => {
    await db.models.Revocation.create({ kind: 'session', subject: 'expired-entry', notBefore: 0, expiresAt: Date.now() - 1 });
    expect(await here.prune()).to.be.greaterThan(0);
    expect(await db.models.Revocation.count({ where: { subject: 'expired-entry' } })).to.equal(0);
  });
});

describe('revocations told over Redis (revocation-channel.ts)', function () {
  this.timeout(30_000);
  let db: TestDb;
  let redis: RedisProcess;
  const clients: Redis[] = [];
  const lists: RevocationList[] = [];

  /** An instance: its own list (polling once a minute, so only the channel can be quick) and its own Redis client. */
  async function instance() {
    const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    clients.push(client);
    await waitUntil('redis client ready', () => client.status === 'ready');
    const list = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    await list.start();
    list.announceOn(new RevocationChannel(client, 'rev-test:', (entry) => list.heard(entry), () => undefined));
    lists.push(list);
    return list;
  }

  before(async () => {
    db = await sqliteDb();
    redis = await startRedis();
  });
  after(async () => {
    for (const list of lists) list.stop();
    for (const client of clients) client.disconnect();
    await redis?.stop();
    await db?.close();
  });

  it('another instance refuses a revoked session as soon as the revoking call returns, without its poll', async () => {
    const here = await instance();
    const there = await instance();
    await sleep(100); // both SUBSCRIBEs have been answered
    const session = makeRecord();
    const userSession = makeRecord({ userId: newUserId(), issuedAt: Date.now() - 1 });
    await here.revokeSession(session.idHash, session.absoluteExpiresAt);
    await here.revokeUser(userSession.userId);
    // Redis has handed the messages to every subscriber before the calls returned; one turn of
    // the event loop lets this process read them.
    await waitUntil('the other instance hears both', () => there.isRevoked(session) && there.isRevoked(userSession), 20);
    expect(there.isRevoked(makeRecord())).to.equal(false, 'nothing else is refused');
  });

  it('a revocation issued while Redis is down still stands everywhere, through the poll', async () => {
    const here = await instance();
    const there = await instance();
    await redis.stop();
    const session = makeRecord();
    await here.revokeSession(session.idHash, session.absoluteExpiresAt); // does not throw, does not hang
    expect(here.isRevoked(session)).to.equal(true);
    expect(there.isRevoked(session)).to.equal(false, 'no message could reach it');
    await there.sync();
    expect(there.isRevoked(session)).to.equal(true);
    await redis.restart();
  });
});
