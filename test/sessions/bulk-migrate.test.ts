import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import type { DatabaseStore } from '../../src/sessions/database-store.js';
import type { RedisStore } from '../../src/sessions/redis-store.js';
import type { Redis } from 'ioredis';
import { bulkMigrate } from '../../src/sessions/bulk-migrate.js';
import { makeRecord } from './fixtures.js';

describe('moving sessions in bulk (scripts/sessions-migrate)', function () {
  this.timeout(30_000);
  let core: Core;
  let raw: { database: DatabaseStore; redis: RedisStore };
  let redis: Redis;
  let dir: string;
  const prefix = `bulk-${randomBytes(4).toString('hex')}:`;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-bulk-'));
    // The deadline the script runs with (sessions-migrate.ts): one late answer on a busy machine failed a 100 ms one.
    const config = loadConfig({ DATA_DIR: dir, DATABASE_URL: `sqlite:${dir}/db.sqlite`, REDIS_KEY_PREFIX: prefix, SESSION_STORAGE: 'redis', STORE_TIMEOUT_MS: '1000' });
    core = await openCore(config, pino({ level: 'silent' }));
    raw = { database: core.raw.database, redis: core.raw.redis! };
    redis = core.redis as Redis;
  });
  after(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await core.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function seed(n: number) {
    const tokens: string[] = [];
    for (let i = 0; i < n; i++) tokens.push((await core.backends.create(makeRecord({}, 'redis'), 'redis')).record.id);
    return tokens;
  }

  it('counts without changing anything on a dry run', async () => {
    const before = await raw.database.countHeldBy('redis');
    await seed(3);
    const result = await bulkMigrate(core.backends, raw, { from: 'redis', to: 'database', batchSize: 2, dryRun: true, cursor: '' });
    expect(result.moved).to.equal(before + 3);
    expect(await raw.database.countHeldBy('redis')).to.equal(before + 3);
  });

  it('moves every Redis session into the database, resuming where an interrupted run stopped', async () => {
    const tokens = await seed(5);
    let cursor = '';
    const interrupted = await bulkMigrate(core.backends, raw, {
      from: 'redis',
      to: 'database',
      batchSize: 2,
      dryRun: false,
      cursor: '',
      onBatch: (p) => {
        cursor = p.cursor;
        throw new Error('operator pressed ctrl-c');
      },
    }).catch((e: Error) => e);
    expect(interrupted).to.be.instanceOf(Error);
    expect(await raw.database.countHeldBy('redis')).to.be.greaterThan(0);
    await bulkMigrate(core.backends, raw, { from: 'redis', to: 'database', batchSize: 2, dryRun: false, cursor });
    expect(await raw.database.countHeldBy('redis')).to.equal(0);
    for (const token of tokens) {
      expect(await raw.redis.load(token)).to.equal(undefined, 'gone from Redis');
      expect((await raw.database.load(token))?.backend).to.equal('database');
    }
  });

  it('moves them back into Redis, and skips revoked ones', async () => {
    const [keep, drop] = await seed(2);
    await bulkMigrate(core.backends, raw, { from: 'redis', to: 'database', batchSize: 10, dryRun: false, cursor: '' });
    const dropped = await raw.database.load(drop!);
    await core.revocations.revokeSession(dropped!.idHash, dropped!.absoluteExpiresAt);
    const result = await bulkMigrate(core.backends, raw, { from: 'database', to: 'redis', batchSize: 10, dryRun: false, cursor: '' });
    expect(result.skipped).to.be.greaterThan(0);
    expect((await raw.redis.load(keep!))?.handle).to.be.a('string');
    expect(await raw.redis.load(drop!)).to.equal(undefined);
    expect((await raw.database.loadByHash(dropped!.idHash)), 'the revoked one is removed, not left behind').to.equal(undefined);
    expect(await raw.database.countHeldBy('database')).to.equal(0, 'the source is empty');
  });

  for (const [from, to] of [
    ['database', 'redis'],
    ['redis', 'database'],
  ] as const) {
    it(`keeps a change a user saved after the page was listed, and leaves a session traffic moved meanwhile (${from} → ${to})`, async () => {
      const [changed, movedAway] = await seed(2);
      if (from === 'database') await bulkMigrate(core.backends, raw, { from: 'redis', to: 'database', batchSize: 100, dryRun: false, cursor: '' });
      const store = core.backends.stores[from];
      const scan = raw.database.scan.bind(raw.database);
      // Between the listing of the page and the moves: a user saves one session, and a request
      // (on an instance whose flag says `to`) moves the other.
      raw.database.scan = async (...args) => {
        const page = await scan(...args);
        raw.database.scan = scan;
        const current = (await store.load(changed!))!;
        await store.save({ ...current, data: { ...current.data, platformId: 42 }, version: current.version + 1 }, current.version);
        const moving = (await store.load(movedAway!))!;
        const moved = await core.backends.migrate(moving, to);
        await core.backends.update({ ...moved!.record, data: { ...moved!.record.data, platformId: 7 }, version: moved!.record.version + 1 }, 'save', { readVersion: moved!.record.version, changedKeys: new Set(['platformId']) });
        return page;
      };
      try {
        await bulkMigrate(core.backends, raw, { from, to, batchSize: 100, dryRun: false, cursor: '' });
      } finally {
        raw.database.scan = scan;
      }
      const changedNow = await core.backends.stores[to].load(changed!);
      expect(changedNow?.data.platformId, 'the change saved after the listing').to.equal(42);
      const movedNow = await core.backends.stores[to].load(movedAway!);
      expect(movedNow?.data.platformId, 'the change saved where traffic moved it').to.equal(7);
    });
  }

  it('never writes over a Redis copy newer than the database row it moves (database → redis)', async () => {
    // A session moved out of Redis into the database (its row at version 2), while a save that
    // had read it in Redis landed there after the move: that copy outlived the eviction (it was
    // not the version moved), and went on taking saves, up to version 8.
    const record = makeRecord({}, 'redis');
    await core.backends.create(record, 'redis');
    await core.backends.stores.database.moveIn({ ...record, backend: 'database', version: 2 }, 1);
    await raw.redis.save({ ...record, version: 2, data: { ...record.data, platformId: 2 } }, 1);
    await core.backends.stores.redis.evict({ ...record, backend: 'redis', version: 1 });
    for (let v = 3; v <= 8; v++) await raw.redis.save({ ...record, version: v, data: { ...record.data, platformId: v } }, v - 1);
    await bulkMigrate(core.backends, raw, { from: 'database', to: 'redis', batchSize: 100, dryRun: false, cursor: '' });
    const now = await raw.redis.load(record.id);
    expect(now, 'the Redis copy').to.deep.include({ version: 8 });
    expect(now!.data.platformId, 'the saves made in Redis').to.equal(8);
  });
});
