/**
 * Runs the conformance suite against every store and every composition the app uses, on the
 * real services: a SQLite file, the machine's PostgreSQL (a database made and dropped here),
 * and the machine's Redis (a key prefix of this run's own, deleted afterwards).
 */
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { sealedCodec, type DataCodec } from '../../src/sessions/codec.js';
import { CookieStore } from '../../src/sessions/cookie-store.js';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { GuardedStore } from '../../src/sessions/guarded-store.js';
import { MirroredStore } from '../../src/sessions/mirrored-store.js';
import { decodeRecord } from '../../src/sessions/redis-record.js';
import { coalesceWrites } from '../../src/sessions/redis-client.js';
import { RedisStore } from '../../src/sessions/redis-store.js';
import { RevocationList } from '../../src/sessions/revocations.js';
import type { SessionData } from '../../src/sessions/session.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { describeStoreConformance, type StoreUnderTest } from './conformance.js';
import { expect } from 'chai';
import { ABSOLUTE_MS, makeRecord, postgresDb, sqliteDb, type TestDb } from './fixtures.js';

const SECRETS = [randomBytes(32).toString('base64url')];
const REDIS_URL = 'redis://127.0.0.1:6379/0';

async function dumpTable(db: TestDb) {
  const rows = await db.models.SessionRow.findAll({ raw: true });
  return JSON.stringify(rows);
}

/** Decodes a dumped record without opening sealed data: a dump shows what rests, as it rests. */
const sealedAsStored: DataCodec = {
  encode: () => {
    throw new Error('a dump only reads');
  },
  decode: (sealed) => ({ sealed }) as unknown as SessionData,
};

/**
 * A session value is binary: its bytes as latin1 text and as base64url (any id or plaintext
 * stored would show in one of them), and decoded (the raw 16-byte handle shows as text only
 * there).
 */
async function redisValueAtRest(client: Redis, key: string, encrypted: boolean) {
  const type = await client.type(key);
  if (type === 'string') {
    const raw = (await client.getBuffer(key))!;
    return { latin1: raw.toString('latin1'), base64url: raw.toString('base64url'), decoded: decodeRecord(raw, '', '', encrypted ? sealedAsStored : undefined) };
  }
  if (type === 'hash') return client.hgetall(key);
  return client.zrange(key, 0, -1);
}

async function redisFixture({ encrypted = false, userIndex = true } = {}) {
  // Writes coalesced per turn, as the app's client sends them.
  const client = coalesceWrites(new Redis(REDIS_URL));
  const prefix = `conformance-${randomBytes(6).toString('hex')}:`;
  const store = new RedisStore(client, { keyPrefix: prefix, absoluteTimeoutMs: ABSOLUTE_MS, codec: encrypted ? sealedCodec(SECRETS) : undefined, userIndex });
  return {
    client,
    store,
    async dump() {
      const keys = await client.keys(`${prefix}*`);
      const values = await Promise.all(keys.map((k) => redisValueAtRest(client, k, encrypted)));
      return JSON.stringify({ keys, values });
    },
    async close() {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length) await client.del(...keys);
      client.disconnect();
    },
  };
}

const noMirrorErrors = (err: unknown) => {
  throw err;
};
const observer = { operation() {}, availability() {} };
const guard = (store: SessionStore) => new GuardedStore(store, { timeoutMs: 2000, breakerThreshold: 5, halfOpenAfterMs: 1000 }, observer);

describe('session stores', () => {
  describeStoreConformance('DatabaseStore on SQLite', async (): Promise<StoreUnderTest> => {
    const db = await sqliteDb();
    return { store: new DatabaseStore(db.models), dumpAtRest: () => dumpTable(db), close: db.close };
  }, { stableToken: true, listable: true, ordersMoves: true });

  describeStoreConformance('DatabaseStore on PostgreSQL', async () => {
    const db = await postgresDb();
    return { store: new DatabaseStore(db.models), dumpAtRest: () => dumpTable(db), close: db.close };
  }, { stableToken: true, listable: true, ordersMoves: true });

  describeStoreConformance('DatabaseStore on PostgreSQL, encrypted at rest', async () => {
    const db = await postgresDb();
    return { store: new DatabaseStore(db.models, sealedCodec(SECRETS)), dumpAtRest: () => dumpTable(db), close: db.close };
  }, { stableToken: true, listable: true, encryptedAtRest: true, ordersMoves: true });

  // IP and User-Agent stay in the database directory (redis-record.ts).
  describeStoreConformance('RedisStore, with the user index (the default)', async () => {
    const r = await redisFixture();
    return { store: r.store, dumpAtRest: r.dump, close: r.close };
  }, { stableToken: true, listable: true, clientInfo: false, ordersMoves: true });

  describeStoreConformance('RedisStore without the user index (as the app runs it)', async () => {
    const r = await redisFixture({ userIndex: false });
    return { store: r.store, dumpAtRest: r.dump, close: r.close };
  }, { stableToken: true, listable: false, clientInfo: false, ordersMoves: true });

  describeStoreConformance('RedisStore, encrypted at rest', async () => {
    const r = await redisFixture({ encrypted: true, userIndex: false });
    return { store: r.store, dumpAtRest: r.dump, close: r.close };
  }, { stableToken: true, listable: false, encryptedAtRest: true, clientInfo: false, ordersMoves: true });

  describeStoreConformance('CookieStore', async () => {
    const db = await sqliteDb();
    const revocations = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 1000 });
    await revocations.start();
    return {
      store: new CookieStore(SECRETS, revocations),
      close: async () => {
        revocations.stop();
        await db.close();
      },
    };
  }, { stableToken: false, listable: false, clientInfo: false });

  describeStoreConformance('Redis mirrored to SQLite, guarded (the app’s redis backend)', async () => {
    const db = await sqliteDb();
    const r = await redisFixture({ userIndex: false });
    const store = new MirroredStore(guard(r.store), new DatabaseStore(db.models), noMirrorErrors, { readThrough: true, flushMs: 50 });
    return {
      store,
      settle: () => store.flush(),
      dumpAtRest: async () => (await r.dump()) + (await dumpTable(db)),
      close: async () => {
        await r.close();
        await db.close();
      },
    };
  }, { stableToken: true, listable: true, clientInfo: false, ordersMoves: true, mirrored: true });

  describeStoreConformance('Cookie mirrored to PostgreSQL, guarded (the app’s cookie backend)', async () => {
    const db = await postgresDb();
    const revocations = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 1000 });
    await revocations.start();
    const store = new MirroredStore(guard(new CookieStore(SECRETS, revocations)), new DatabaseStore(db.models), noMirrorErrors, { flushMs: 50 });
    return {
      store,
      settle: () => store.flush(),
      dumpAtRest: () => dumpTable(db),
      close: async () => {
        revocations.stop();
        await db.close();
      },
    };
  }, { stableToken: false, listable: true, clientInfo: false, ordersMoves: true, mirrored: true });

  describeStoreConformance('DatabaseStore on SQLite, guarded (the app’s database backend)', async () => {
    const db = await sqliteDb();
    return { store: guard(new DatabaseStore(db.models)), dumpAtRest: () => dumpTable(db), close: db.close };
  }, { stableToken: true, listable: true, ordersMoves: true });

  // The copy of a save is conditional whether written behind (the default) or through
  // (MIRROR_FLUSH_MS=0): a copy that arrives late never overwrites a session another backend has
  // claimed meanwhile (a migration to the database), nor a newer save's copy.
  for (const flushMs of [0, 50]) {
    describe(`the database copy of a Redis save, ${flushMs ? 'written behind' : 'written through'}`, () => {
      let db: TestDb;
      let r: Awaited<ReturnType<typeof redisFixture>>;
      let database: DatabaseStore;
      let mirrored: MirroredStore;
      beforeEach(async () => {
        db = await sqliteDb();
        r = await redisFixture({ userIndex: false });
        database = new DatabaseStore(db.models);
        mirrored = new MirroredStore(r.store, database, noMirrorErrors, { readThrough: true, flushMs });
      });
      afterEach(async () => {
        await r.close();
        await db.close();
      });
      const rowOf = (idHash: string) => db.models.SessionRow.findByPk(idHash, { raw: true });

      it('does not take back a session the database has claimed', async () => {
        const record = makeRecord({}, 'redis');
        await mirrored.create(record);
        // A migration to the database wrote its row; Redis still holds the key it will evict.
        await database.create({ ...record, backend: 'database', version: 2 });
        await mirrored.save({ ...record, version: 2, data: { ...record.data, platformId: 7 } }, 1);
        await mirrored.flush();
        expect(await rowOf(record.idHash)).to.deep.include({ backend: 'database', version: 2 });
      });

      it('does not overwrite a newer save', async () => {
        const record = makeRecord({}, 'redis');
        await mirrored.create(record);
        await database.create({ ...record, version: 5, data: { ...record.data, platformId: 5 } });
        await mirrored.save({ ...record, version: 3, data: { ...record.data, platformId: 3 } });
        await mirrored.flush();
        const row = await rowOf(record.idHash);
        expect(row).to.deep.include({ backend: 'redis', version: 5 });
        expect(JSON.parse(row!.data)).to.deep.include({ platformId: 5 });
      });

      if (flushMs) {
        it('a destroy waits for a batch already on its way, so the row does not come back', async () => {
          let release!: () => void;
          const gate = new Promise<void>((resolve) => (release = resolve));
          // The real store, its batch held back a moment: the flush is in flight when the destroy comes.
          class HeldBack extends DatabaseStore {
            override async upsertMany(records: Parameters<DatabaseStore['upsertMany']>[0]) {
              await gate;
              return super.upsertMany(records);
            }
          }
          const held = new MirroredStore(r.store, new HeldBack(db.models), noMirrorErrors, { readThrough: true, flushMs });
          const record = makeRecord({}, 'redis');
          await held.create(record);
          await held.save({ ...record, version: 2 }, 1);
          const flushing = held.flush();
          const destroyed = held.destroy(record);
          setTimeout(release, 50);
          await Promise.all([flushing, destroyed]);
          expect(await rowOf(record.idHash)).to.equal(null);
        });
      }

      it('copies an ordinary save', async () => {
        const record = makeRecord({}, 'redis');
        await mirrored.create(record);
        await mirrored.save({ ...record, version: 2, data: { ...record.data, platformId: 2 } }, 1);
        await mirrored.flush();
        const row = await rowOf(record.idHash);
        expect(row).to.deep.include({ backend: 'redis', version: 2 });
        expect(JSON.parse(row!.data)).to.deep.include({ platformId: 2 });
      });
    });
  }
});
