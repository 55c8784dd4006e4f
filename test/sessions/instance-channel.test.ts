/**
 * What instances tell each other over Redis (instance-channel.ts): revocations and the flag
 * override reach another instance as soon as the changing call returns, not one poll later;
 * without Redis the poll still brings them.
 */
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { FlagOverride } from '../../src/flags/override.js';
import { InstanceChannel } from '../../src/sessions/instance-channel.js';
import { createRedisClient } from '../../src/sessions/redis-client.js';
import type { RedisConnection } from '../../src/config/config.js';
import { RevocationList } from '../../src/sessions/revocations.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { ABSOLUTE_MS, makeRecord, newUserId, sqliteDb, type TestDb } from './fixtures.js';

describe('instances told over Redis (instance-channel.ts)', function () {
  this.timeout(30_000);
  let db: TestDb;
  let redis: RedisProcess;
  const stops: Array<() => void> = [];

  /** An instance's Redis client, as the app makes it: no offline queue, quick retries. */
  async function connect() {
    const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    // Tests here stop Redis under the clients: the app reports that through its own listener (core.ts).
    client.on('error', () => undefined);
    await waitUntil('redis client ready', () => client.status === 'ready');
    return client;
  }

  /**
   * An instance: its own revocation list and override (polling once a minute, so only the
   * channel can be quick: the tests' waits, 10 s at most against a slow machine, stay far below it), its own Redis client and channel. `operatorChanges` counts what
   * would end an automatic rollback there. `channelPrefix`: the app's is `<REDIS_KEY_PREFIX><deployment id>:`.
   */
  async function instance(channelPrefix = 'channel-test:deployment-1:') {
    const client = await connect();
    const channel = new InstanceChannel(client, channelPrefix, () => undefined);
    const revocations = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    await revocations.start();
    const node = { revocations, override: undefined as unknown as FlagOverride, operatorChanges: 0 };
    node.override = new FlagOverride(db.models, { syncIntervalMs: 60_000, onOperatorChange: () => node.operatorChanges++ });
    await node.override.start();
    // Once Redis has confirmed both subscriptions, a message published by anyone reaches this one.
    await Promise.all([revocations.announceOn(channel), node.override.announceOn(channel)]);
    stops.push(() => {
      revocations.stop();
      node.override.stop();
      channel.close();
      client.disconnect();
    });
    return node;
  }

  /**
   * A client logged in as an ACL user, made as the app makes it (redis-client.ts: no CLIENT
   * SETINFO, so its ready check follows AUTH at once).
   */
  function appClientAs(username: string, password: string) {
    const url = new URL(redis.url);
    url.username = username;
    url.password = password;
    const client = createRedisClient({ url: url.toString() } as RedisConnection);
    client.on('error', () => undefined); // these tests refuse its AUTH or SUBSCRIBE on purpose
    return client;
  }

  before(async () => {
    db = await sqliteDb();
    redis = await startRedis();
  });
  after(async () => {
    for (const stop of stops) stop();
    await redis?.stop();
    await db?.close();
  });

  it('another instance refuses a revoked session as soon as the revoking call returns, without its poll', async () => {
    const here = await instance();
    const there = await instance();
    const session = makeRecord();
    const userSession = makeRecord({ userId: newUserId(), issuedAt: Date.now() - 1 });
    await here.revocations.revokeSession(session.idHash, session.absoluteExpiresAt);
    await here.revocations.revokeUser(userSession.userId);
    // Redis has handed the messages to every subscriber before the calls returned; one turn of
    // the event loop lets this process read them.
    await waitUntil('the other instance hears both', () => there.revocations.isRevoked(session) && there.revocations.isRevoked(userSession), 200);
    expect(there.revocations.isRevoked(makeRecord())).to.equal(false, 'nothing else is refused');
  });

  it('an instance of another deployment on the same Redis hears none of it', async () => {
    const here = await instance();
    const same = await instance();
    const elsewhere = await instance('channel-test:deployment-2:');
    const session = makeRecord();
    await here.revocations.revokeSession(session.idHash, session.absoluteExpiresAt);
    await here.override.set('cookie', 'admin');
    await waitUntil('the same deployment hears both', () => same.revocations.isRevoked(session) && same.override.value?.backend === 'cookie', 200);
    // Both subscribers' connections got the messages from the same PUBLISH; give the other one's a turn.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(elsewhere.revocations.isRevoked(session)).to.equal(false);
    expect(elsewhere.override.value?.backend).to.not.equal('cookie');
    await here.override.clear('admin');
  });

  it('another instance serves an override, and ends its rollback, as soon as the setting call returns', async () => {
    const here = await instance();
    const there = await instance();
    const before = there.operatorChanges;
    await here.override.set('redis', 'admin');
    // The message only nudges the other instance to read the row, so allow it the read.
    await waitUntil('the other instance serves the override', () => there.override.value?.backend === 'redis', 200);
    expect(there.operatorChanges).to.equal(before + 1, 'an operator acted: its rollback ends');
    await here.override.clear();
    await waitUntil('the other instance drops the override', () => there.override.value === undefined, 200);
    expect(there.operatorChanges).to.equal(before + 2);
  });

  it('an override announced late (its PUBLISH held up by a stalled Redis node) does not undo a newer one', async () => {
    const here = await instance();
    const there = await instance();
    await here.override.set('database', 'admin');
    const stale = { value: 'database', updatedAt: here.override.value!.updatedAt, updatedBy: 'admin' };
    await new Promise((resolve) => setTimeout(resolve, 5));
    await here.override.set('cookie', 'admin');
    await waitUntil('the other instance serves the newer override', () => there.override.value?.backend === 'cookie', 200);
    const changes = there.operatorChanges;
    // The first change's announcement, delivered only now (a Cluster master paused while it held it).
    const client = await connect();
    const late = new InstanceChannel(client, 'channel-test:deployment-1:', () => undefined);
    try {
      await late.publish('flag-override', stale);
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      late.close();
      client.disconnect();
    }
    expect(here.override.value?.backend, 'where the newer one was set').to.equal('cookie');
    expect(there.override.value?.backend).to.equal('cookie');
    expect(there.operatorChanges, 'no operator change: a rollback in force stays').to.equal(changes);
    await here.override.clear(); // the instances of the next tests share this database
  });

  it('a publishing process held up past the wait still answers only once Redis has taken the message (a busy machine)', async () => {
    const client = await connect();
    const heard: unknown[] = [];
    const publisher = new InstanceChannel(client, 'channel-test:stalled:', () => undefined);
    const listener = await connect();
    const subscriber = new InstanceChannel(listener, 'channel-test:stalled:', () => undefined);
    try {
      await subscriber.listen('news', (message) => heard.push(message));
      const published = publisher.publish('news', { hello: 'held up' });
      // The PUBLISH is on its way; this process is then held up past the 100 ms wait, as one
      // on a loaded machine is, while Redis answers it and hands the message to the subscriber.
      const until = Date.now() + 300;
      while (Date.now() < until);
      await published;
      expect(heard, 'the message taken and delivered before publish() settles').to.deep.equal([{ hello: 'held up' }]);
    } finally {
      publisher.close();
      subscriber.close();
      client.disconnect();
      listener.disconnect();
    }
  });

  it('a subscription asked for during the connection\'s handshake holds: the connection is not dropped, and what is published next is heard', async () => {
    // A client with ioredis's defaults (this file's, unlike the app's, sends CLIENT SETINFO),
    // whose subscribed connection is connected but not answered yet (Redis stopped: the kernel
    // takes the connection), when an instance asks for its channels.
    const client = await connect();
    const reported: unknown[] = [];
    const heard: unknown[] = [];
    await redis.pause(30_000);
    const channel = new InstanceChannel(client, 'channel-test:handshake:', (err) => reported.push(err), (err) => reported.push(err));
    const subscriber = (channel as unknown as { subscriber: Redis }).subscriber;
    try {
      await waitUntil('the subscribed connection in its handshake', () => subscriber.status === 'connect');
      const subscribed = channel.listen('news', (message) => heard.push(message));
      redis.resume();
      await subscribed;
      await client.publish('channel-test:handshake:news', JSON.stringify({ hello: 'after the handshake' }));
      await waitUntil('the message heard', () => heard.length === 1);
      // Before: the SUBSCRIBE went ahead of the ready check's INFO, which Redis refused in
      // subscriber mode; ioredis dropped the connection, and the message published meanwhile was lost.
      expect(reported.map(String), 'no ready check refused, no reconnect').to.deep.equal([]);
    } finally {
      redis.resume();
      channel.close();
      client.disconnect();
    }
  });

  it('its ACL user deleted under it (its connections dropped, AUTH refused while the default user needs no password): no crash, and heard again once the user is back', async () => {
    const user = ['ACL', 'SETUSER', 'channel-user', 'on', '>channel-pass', '~*', '&*', '+@all'];
    await redisCommand(redis.port, user);
    const client = appClientAs('channel-user', 'channel-pass');
    const heard: unknown[] = [];
    const channel = new InstanceChannel(client, 'channel-test:acl:', () => undefined);
    const other = await connect();
    try {
      await waitUntil('client ready', () => client.status === 'ready');
      await channel.listen('news', (message) => heard.push(message));
      // Mocha fails the test on an unhandled rejection (ioredis's own resubscription, refused).
      await redisCommand(redis.port, ['ACL', 'DELUSER', 'channel-user']);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await redisCommand(redis.port, user);
      await waitUntil('heard again', async () => {
        await other.publish('channel-test:acl:news', JSON.stringify({ n: heard.length }));
        return heard.length > 0;
      });
    } finally {
      channel.close();
      client.disconnect();
      other.disconnect();
      await redisCommand(redis.port, ['ACL', 'DELUSER', 'channel-user']);
    }
  });

  it('an instance closed before Redis has answered its subscriptions reports nothing (a stop right after start)', async () => {
    const client = await connect();
    const errors: unknown[] = [];
    const channel = new InstanceChannel(client, 'channel-test:', (err) => errors.push(err));
    const subscribing = [channel.listen('revocations', () => undefined), channel.listen('flag-override', () => undefined)];
    channel.close();
    client.disconnect();
    await Promise.all(subscribing); // settled: refused by the closed connection, never rejected
    expect(errors.map(String)).to.deep.equal([]);
  });

  it('a revocation or override made while Redis is down still stands everywhere, through the poll', async () => {
    const here = await instance();
    const there = await instance();
    await redis.stop();
    const session = makeRecord();
    await here.revocations.revokeSession(session.idHash, session.absoluteExpiresAt); // does not throw, does not hang
    await here.override.set('cookie', 'admin');
    expect(here.revocations.isRevoked(session)).to.equal(true);
    expect(here.override.value?.backend).to.equal('cookie');
    expect(there.revocations.isRevoked(session)).to.equal(false, 'no message could reach it');
    expect(there.override.value?.backend).to.not.equal('cookie', 'no message could reach it');
    await there.revocations.sync();
    await there.override.sync();
    expect(there.revocations.isRevoked(session)).to.equal(true);
    expect(there.override.value?.backend).to.equal('cookie');
    await redis.restart();
  });
  it('an instance started while Redis is down hears the others once Redis is up (its SUBSCRIBE waits, and is sent)', async () => {
    const later = await startRedis();
    const port = later.port;
    await later.stop();
    // As the app makes its client: no offline queue, one retry; Redis not there yet.
    const client = new Redis(`redis://127.0.0.1:${port}/0`, { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    client.on('error', () => undefined);
    const heard: unknown[] = [];
    const reported: unknown[] = [];
    const channel = new InstanceChannel(client, 'channel-test:late:', (err) => reported.push(err));
    const subscribed = channel.listen('news', (message) => heard.push(message));
    try {
      // Long enough for several reconnect attempts, each of which failed the queued SUBSCRIBE.
      await new Promise((resolve) => setTimeout(resolve, 500));
      await later.restart();
      await subscribed;
      await waitUntil('the client ready', () => client.status === 'ready');
      await channel.publish('news', { hello: 'late' });
      await waitUntil('the message heard', () => heard.length === 1);
      expect(heard).to.deep.equal([{ hello: 'late' }]);
      expect(reported, 'nothing reported').to.deep.equal([]);
    } finally {
      channel.close();
      client.disconnect();
      await later.stop();
    }
  });
  it('an instance whose SUBSCRIBE Redis refused (its ACL) hears the others once the ACL allows it, without a restart', async function () {
    this.timeout(60_000);
    await redisCommand(redis.port, ['ACL', 'SETUSER', 'nosub', 'on', '>Sub-Password-0123', '~*', '&*', '+@all', '-subscribe']);
    const client = new Redis(`redis://nosub:Sub-Password-0123@127.0.0.1:${redis.port}/0`, { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    client.on('error', () => undefined);
    await waitUntil('redis client ready', () => client.status === 'ready');
    const heard: unknown[] = [];
    const reported: unknown[] = [];
    const channel = new InstanceChannel(client, 'channel-test:acl:', (err) => reported.push(err));
    try {
      await channel.listen('news', (message) => heard.push(message));
      expect(String(reported[0]), 'the refusal reported').to.match(/NOPERM/);
      await redisCommand(redis.port, ['ACL', 'SETUSER', 'nosub', '+subscribe']);
      // Published until heard: the SUBSCRIBE is sent again every few seconds.
      await waitUntil('a message heard', async () => {
        await channel.publish('news', { hello: 'allowed' });
        return heard.length > 0;
      }, 300);
      expect(heard[0]).to.deep.equal({ hello: 'allowed' });
    } finally {
      channel.close();
      client.disconnect();
    }
  });

  it('a SUBSCRIBE refused across many reconnects is asked again once per retry, not once more per reconnect', async function () {
    this.timeout(60_000);
    await redisCommand(redis.port, ['ACL', 'SETUSER', 'nochan', 'on', '>Chan-Password-0123', '~*', 'resetchannels', '+@all']);
    const client = appClientAs('nochan', 'Chan-Password-0123');
    const reported: unknown[] = [];
    const channel = new InstanceChannel(client, 'channel-test:churn:', (err) => reported.push(err));
    try {
      await channel.listen('news', () => undefined);
      // Its connection dropped 10 times (a flaky network, Redis restarted, CLIENT KILL): each
      // reconnect subscribes again, and is refused again.
      for (let i = 0; i < 10; i++) {
        await redisCommand(redis.port, ['CLIENT', 'KILL', 'USER', 'nochan', 'SKIPME', 'yes']);
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
      // Over the next retry interval (5 s): the one channel asked again once, not by a chain
      // started at every reconnect (before: 11 SUBSCRIBEs every 5 s, piling up for as long as
      // the ACL refused, each reconnect adding one per channel).
      const before = reported.length;
      await new Promise((resolve) => setTimeout(resolve, 5_500));
      expect(reported.length - before).to.be.at.most(2);
    } finally {
      channel.close();
      client.disconnect();
      await redisCommand(redis.port, ['ACL', 'DELUSER', 'nochan']);
    }
  });
});
