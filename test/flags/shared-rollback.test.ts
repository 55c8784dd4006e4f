/**
 * An automatic rollback shared by the instances of one database (flags/override.ts): followed
 * by every instance, over Redis at once or by the poll, and ended for good by an operator's
 * change — also when the rollback reaches the table or the channel only after that change, and
 * when the change comes from a release that knows no rollback row (a rolling deployment).
 * Real SQLite and a real Redis; each "instance" is wired as core.ts wires it.
 */
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { FlagOverride, FLAG_NAME } from '../../src/flags/override.js';
import { RollbackGuard, type RollbackState } from '../../src/flags/rollback.js';
import { InstanceChannel } from '../../src/sessions/instance-channel.js';
import { startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import { sqliteDb, type TestDb } from '../sessions/fixtures.js';

const GUARD = { errorRate: 0.05, latencyFactor: 2, latencyFloorMs: 10, windowMs: 60_000, minSamples: 20 };
const CHANNEL_PREFIX = 'shared-rollback-test:';

describe('an automatic rollback shared by the instances of one database', function () {
  this.timeout(30_000);
  let db: TestDb;
  let redis: RedisProcess;
  const stops: Array<() => Promise<void>> = [];

  interface Instance {
    guard: RollbackGuard;
    override: FlagOverride;
    channel?: InstanceChannel;
  }

  /** An instance: its guard and override as core.ts wires them, polling only when told (`sync`). */
  async function instance({ enabled = true, overRedis = true } = {}): Promise<Instance> {
    const guard = new RollbackGuard({ ...GUARD, enabled }, () => undefined);
    const override = new FlagOverride(db.models, { syncIntervalMs: 60_000, onOperatorChange: () => guard.clear(), onRollback: (state) => guard.follow(state) });
    await override.start();
    let channel: InstanceChannel | undefined;
    let client: Redis | undefined;
    if (overRedis) {
      client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
      await waitUntil('redis client ready', () => client?.status === 'ready');
      channel = new InstanceChannel(client, CHANNEL_PREFIX, () => undefined);
      await override.announceOn(channel);
    }
    stops.push(async () => {
      await override.stop();
      channel?.close();
      client?.disconnect();
    });
    return { guard, override, channel };
  }

  /** What `decider`'s guard decided at `at`, as core.ts shares it: under the operator change it knew then. */
  function decision(at = Date.now()): RollbackState {
    return { from: 'redis', to: 'database', trigger: 'error_rate', at, errorRatio: 0.5, p99Seconds: 0.2, baselineP99Seconds: 0.001 };
  }
  async function decide(decider: Instance, state = decision(), basedOn = decider.override.epoch) {
    decider.guard.follow(state);
    await decider.override.shareRollback(state, basedOn);
    return state;
  }

  beforeEach(async () => {
    db = await sqliteDb();
  });
  afterEach(async () => {
    for (const stop of stops.splice(0)) await stop();
    await db?.close();
  });
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis?.stop());

  it('is followed at once over Redis, by the poll without it, and by an instance started later', async () => {
    const a = await instance();
    const b = await instance();
    const polling = await instance({ overRedis: false });
    const state = await decide(a);
    await waitUntil('b hears it', () => b.guard.state !== undefined);
    expect(b.guard.state).to.deep.include({ from: 'redis', to: 'database', trigger: 'error_rate', at: state.at });
    expect(b.guard.decidedHere).to.equal(false);
    expect(b.guard.redirect('redis')).to.equal('database');
    await polling.override.sync();
    expect(polling.guard.redirect('redis')).to.equal('database');
    const later = await instance({ overRedis: false });
    expect(later.guard.state).to.deep.include({ from: 'redis', at: state.at });
  });

  it('is followed by an instance with ROLLBACK_ENABLED=false too (it only decides none)', async () => {
    const a = await instance();
    const off = await instance({ enabled: false });
    await decide(a);
    await waitUntil('the instance with rollbacks off follows', () => off.guard.state !== undefined);
    expect(off.guard.redirect('redis')).to.equal('database');
  });

  it('ends everywhere, for good, when an operator acts', async () => {
    const a = await instance();
    const b = await instance();
    await decide(a);
    await waitUntil('b follows', () => b.guard.state !== undefined);
    await b.override.clear();
    expect(b.guard.state).to.equal(undefined);
    await waitUntil('a hears the operator', () => a.guard.state === undefined);
    await a.override.sync();
    expect(a.guard.state, 'not read back').to.equal(undefined);
    expect((await instance({ overRedis: false })).guard.state, 'nor by a new instance').to.equal(undefined);
  });

  it('does not come back when the decider stores it only after the operator cleared it (its database was away)', async () => {
    const a = await instance();
    const b = await instance();
    const state = decision();
    const basedOn = a.override.epoch;
    a.guard.follow(state);
    // The announcement went out; the store did not (the decider's database link was cut).
    await a.channel!.publish('flag-rollback', { value: JSON.stringify({ from: 'redis', to: 'database', trigger: 'error_rate' }), updatedAt: state.at, updatedBy: `${basedOn} 0.5 0.2 0.001` });
    await waitUntil('b follows the announcement', () => b.guard.state !== undefined);
    await b.override.clear();
    await waitUntil('a hears the operator', () => a.guard.state === undefined);
    // The decider's retry gets through at last.
    await a.override.shareRollback(state, basedOn);
    for (const node of [a, b]) {
      await node.override.sync();
      expect(node.guard.state, 'a rollback decided before the clear').to.equal(undefined);
    }
    expect((await instance({ overRedis: false })).guard.state, 'nor after a restart').to.equal(undefined);
  });

  it('ignores an announcement decided before the operator change in force (heard late)', async () => {
    const a = await instance();
    const b = await instance();
    const before = a.override.epoch;
    await b.override.clear();
    await waitUntil('a hears the operator', () => a.override.epoch !== before);
    await a.override.shareRollback(decision(), before);
    await new Promise((r) => setTimeout(r, 200));
    expect(b.guard.state).to.equal(undefined);
    expect(a.guard.state).to.equal(undefined);
  });

  it('ends for good when the operator acts on an older release, which writes only the override row', async () => {
    const a = await instance();
    const b = await instance();
    await decide(a);
    await waitUntil('b follows', () => b.guard.state !== undefined);
    // The previous release's DELETE: the override row alone, with a new time; the rollback row stays.
    await db.models.FlagOverride.upsert({ name: FLAG_NAME, value: '', updatedAt: Date.now(), updatedBy: 'admin' });
    for (const node of [a, b]) {
      await node.override.sync();
      expect(node.guard.state, 'cleared, and the old row not followed again').to.equal(undefined);
    }
    expect((await instance({ overRedis: false })).guard.state).to.equal(undefined);
  });
});
