/**
 * What the database store does beyond the conformance suite, on SQLite and PostgreSQL: the
 * directory keeps the IP and User-Agent of the login (the Redis and cookie copies arrive
 * without them), the write-behind batch's conditions, and the connection's life cycle with the
 * store's prepared statements on it.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Sequelize } from 'sequelize';
import sqlite3 from 'sqlite3';
import { openDatabase } from '../../src/db/database.js';
import { migrateUp } from '../../src/db/migrator.js';
import { defineModels } from '../../src/db/models.js';
import { SessionConflictError } from '../../src/sessions/errors.js';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { hashSessionId, newSessionId, type SessionRecord } from '../../src/sessions/session.js';
import { connectPostgres } from '../support/postgres.js';
import { makeRecord, postgresDb, sqliteDb, type TestDb } from './fixtures.js';

const LOGIN = { ip: '203.0.113.7', userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0' };
const WITHOUT_CLIENT = { ip: '', userAgent: '' };

for (const [name, open] of [
  ['SQLite', sqliteDb],
  ['PostgreSQL', postgresDb],
] as const) {
  describe(`DatabaseStore on ${name}`, function () {
    this.timeout(30_000);
    let db: TestDb;
    let store: DatabaseStore;
    before(async () => {
      db = await open();
      store = new DatabaseStore(db.models);
    });
    after(async () => {
      await store?.close();
      await db?.close();
    });

    async function stored(record: SessionRecord) {
      return db.models.SessionRow.findByPk(record.idHash, { raw: true });
    }
    const changedData = (r: SessionRecord, platformId: number) => ({ ...r.data, platformId });

    describe('keeps the IP and User-Agent of the login', () => {
      it('when a copy without them is created over the row (a migration from Redis or the cookie)', async () => {
        const record = makeRecord(LOGIN, 'redis');
        await store.create(record);
        await store.create({ ...record, ...WITHOUT_CLIENT, backend: 'database', version: 2, data: changedData(record, 3) });
        const row = await stored(record);
        expect(row).to.deep.include({ backend: 'database', version: 2, ...LOGIN });
        expect(JSON.parse(row!.data)).to.deep.include({ platformId: 3 });
      });

      it('when the write-behind batch updates the row', async () => {
        const record = makeRecord(LOGIN, 'cookie');
        await store.create(record);
        await store.upsertMany([{ ...record, ...WITHOUT_CLIENT, version: 2, data: changedData(record, 4) }]);
        const row = await stored(record);
        expect(row).to.deep.include({ version: 2, ...LOGIN });
        expect(JSON.parse(row!.data)).to.deep.include({ platformId: 4 });
      });

      it('when a save (with or without an expected version) or a touch carries none', async () => {
        const record = makeRecord(LOGIN);
        await store.create(record);
        expect(await store.save({ ...record, ...WITHOUT_CLIENT, version: 2 })).to.equal(record.id);
        expect(await store.save({ ...record, ...WITHOUT_CLIENT, version: 3, data: changedData(record, 5) }, 2)).to.equal(record.id);
        expect(await store.touch({ ...record, ...WITHOUT_CLIENT, lastActivity: record.lastActivity + 1000 })).to.equal(record.id);
        const loaded = await store.load(record.id);
        expect(loaded).to.deep.include({ version: 3, lastActivity: record.lastActivity + 1000, ...LOGIN });
        expect(loaded?.data.platformId).to.equal(5);
      });

      it('but takes new ones, and writes a new row as it is given', async () => {
        const record = makeRecord(LOGIN);
        await store.create(record);
        const elsewhere = { ip: '198.51.100.2', userAgent: 'curl/8.14' };
        await store.save({ ...record, ...elsewhere, version: 2 });
        expect(await stored(record)).to.deep.include(elsewhere);

        const bare = makeRecord(WITHOUT_CLIENT, 'redis');
        const bareBatched = makeRecord(WITHOUT_CLIENT, 'cookie');
        await store.create(bare);
        await store.upsertMany([bareBatched]);
        expect(await stored(bare)).to.deep.include(WITHOUT_CLIENT);
        expect(await stored(bareBatched)).to.deep.include(WITHOUT_CLIENT);
      });
    });

    describe('the write-behind batch', () => {
      it('creates missing rows and updates those still held by the same backend at an older or equal version', async () => {
        const existing = makeRecord({}, 'redis');
        const missing = makeRecord({}, 'redis');
        await store.create(existing);
        await store.upsertMany([
          { ...existing, version: 1, data: changedData(existing, 1) },
          { ...missing, data: changedData(missing, 2) },
        ]);
        expect((await store.load(existing.id))?.data.platformId).to.equal(1);
        expect((await store.load(missing.id))?.data.platformId).to.equal(2);
      });

      it('leaves a row another backend holds now, or one at a newer version', async () => {
        const moved = makeRecord({}, 'redis');
        const newer = makeRecord({}, 'redis');
        await store.create({ ...moved, backend: 'database', version: 2 });
        await store.create({ ...newer, version: 5, data: changedData(newer, 50) });
        await store.upsertMany([
          { ...moved, version: 3, data: changedData(moved, 1) },
          { ...newer, version: 4, data: changedData(newer, 40) },
        ]);
        expect(await stored(moved)).to.deep.include({ backend: 'database', version: 2 });
        expect(await stored(newer)).to.deep.include({ version: 5 });
        expect((await store.load(newer.id))?.data.platformId).to.equal(50);
      });

      it('does not bring back an id whose login went on under a new one, and writes the rest of the batch', async () => {
        const old = makeRecord({}, 'redis');
        await store.create(old);
        await store.destroy(old);
        const id = newSessionId();
        const rotated = { ...old, id, idHash: hashSessionId(id), version: 2 };
        await store.create(rotated);
        const other = makeRecord({}, 'redis');
        await store.upsertMany([{ ...old, version: 2 }, other]);
        expect(await stored(old)).to.equal(null);
        expect(await stored(rotated)).to.not.equal(null);
        expect(await stored(other)).to.not.equal(null);
      });
    });

    it("gives the handle to a rotated id, over a late copy of the login's previous id", async () => {
      const old = makeRecord(LOGIN, 'redis');
      await store.create(old);
      // The rotation removed `old`; another instance's late batch wrote it back (as here): the new id still gets its row.
      const id = newSessionId();
      const rotated = { ...old, id, idHash: hashSessionId(id), version: 2 };
      expect(await store.create(rotated)).to.equal(id);
      expect(await stored(old)).to.equal(null);
      expect(await stored(rotated)).to.deep.include({ handle: old.handle, version: 2 });
    });

    it('writes batches of two instances over the same sessions at once without a deadlock', async () => {
      // Each instance batches its own copies in its own order: a statement locks rows as it goes,
      // so two that meet the same rows in opposite orders wait on each other (PostgreSQL: 40P01).
      const other = new DatabaseStore(db.models);
      try {
        const records = Array.from({ length: 128 }, () => makeRecord({}, 'redis'));
        for (const r of records) await store.create(r);
        for (let round = 2; round < 202; round++) {
          const batch = records.map((r) => ({ ...r, version: round, data: changedData(r, round) }));
          await Promise.all([store.upsertMany(batch), other.upsertMany([...batch].reverse())]);
        }
        const rows = await db.models.SessionRow.findAll({ where: { idHash: records.map((r) => r.idHash) }, raw: true });
        expect(rows.map((r) => r.version)).to.deep.equal(records.map(() => 201));
      } finally {
        await other.close();
      }
    });

    it('applies the same rules to a large batch, written a chunk of rows per statement', async () => {
      // 150 rows: chunks of 64, 64, 16 and 4, then two alone. The rows each rule is about sit in
      // the first chunk, where a clash fails the statement and the chunk is retried row by row.
      const records = Array.from({ length: 150 }, () => makeRecord({}, 'redis'));
      const [existing, moved, newer, old] = records as [SessionRecord, SessionRecord, SessionRecord, SessionRecord];
      await store.create(existing);
      await store.create({ ...moved, backend: 'database', version: 2 });
      await store.create({ ...newer, version: 5, data: changedData(newer, 50) });
      await store.create(old);
      await store.destroy(old);
      const id = newSessionId();
      await store.create({ ...old, id, idHash: hashSessionId(id), version: 2 });

      await store.upsertMany(records.map((r, i) => ({ ...r, version: r === moved ? 3 : r === newer ? 4 : 2, data: changedData(r, i) })));

      expect(await stored(old), 'an id whose login went on under a new one').to.equal(null);
      expect(await stored(moved)).to.deep.include({ backend: 'database', version: 2 });
      expect(await stored(newer)).to.deep.include({ version: 5 });
      const rest = records.filter((r) => r !== moved && r !== newer && r !== old);
      const rows = await db.models.SessionRow.findAll({ where: { idHash: rest.map((r) => r.idHash) }, raw: true });
      expect(rows).to.have.length(rest.length);
      for (const row of rows) {
        const i = records.findIndex((r) => r.idHash === row.idHash);
        expect(row.version, `row ${i}`).to.equal(2);
        expect(JSON.parse(row.data).platformId, `row ${i}`).to.equal(i);
      }
    });

    describe('saving with an expected version', () => {
      it('conflicts while the row is at another version, and finds nothing once it is gone', async () => {
        const record = makeRecord();
        await store.create({ ...record, version: 3 });
        const attempt = { ...record, version: 3 };
        const conflict = await store.save(attempt, 1).catch((e: unknown) => e);
        expect(conflict).to.be.instanceOf(SessionConflictError);
        await store.destroy(record);
        expect(await store.save(attempt, 3)).to.equal(undefined);
        expect(await store.touch(attempt)).to.equal(undefined);
      });
    });

    describe('saves that arrive together (one statement)', () => {
      it('each applies at its own expected version: a stale one conflicts, a gone one finds nothing, the rest are written', async () => {
        const records = Array.from({ length: 40 }, () => makeRecord());
        await Promise.all(records.map((r) => store.create(r)));
        const stale = records[7]!;
        await store.save({ ...stale, version: 2 }, 1);
        const gone = records[23]!;
        await store.destroy(gone);

        const results = await Promise.all(
          records.map((r, i) => store.save({ ...r, version: 2, data: changedData(r, i) }, 1).catch((e: unknown) => e)),
        );

        results.forEach((result, i) => {
          if (records[i] === stale) expect(result, `save ${i}`).to.be.instanceOf(SessionConflictError);
          else if (records[i] === gone) expect(result, `save ${i}`).to.equal(undefined);
          else expect(result, `save ${i}`).to.equal(records[i]!.id);
        });
        const loaded = await Promise.all(records.map((r) => store.load(r.id)));
        loaded.forEach((record, i) => {
          if (records[i] === gone) return expect(record).to.equal(undefined);
          expect(record!.data.platformId, `session ${i}`).to.equal(records[i] === stale ? records[i]!.data.platformId : i);
        });
      });

      if (name === 'PostgreSQL') {
        it('skip a row someone else holds, write the others at once, and write that one once it is free (nothing waits holding rows: no deadlock)', async () => {
          // Two instances' statements over the same sessions once deadlocked (each holding a row
          // the other waited for), and an operator's SELECT … FOR UPDATE left open in psql held up
          // every session of the statement that met it. A gathered statement now waits for no row;
          // the one it skipped is sent again alone, and only its own save waits.
          const [small, large] = [makeRecord(), makeRecord()].sort((a, b) => (a.idHash < b.idHash ? -1 : 1)) as [SessionRecord, SessionRecord];
          await store.create(large);
          await store.create(small);
          const holder = await db.sequelize.transaction();
          try {
            await db.sequelize.query('SELECT 1 FROM sessions WHERE id_hash = ? FOR UPDATE', { replacements: [large.idHash], transaction: holder });
            const [smallSave, largeSave] = [small, large].map((r) => store.save({ ...r, version: 2 }, 1));
            expect(await smallSave, 'the session nobody holds, while the other is held').to.equal(small.id);
            expect((await store.load(small.id))!.version).to.equal(2);
            let largeDone = false;
            void largeSave!.finally(() => (largeDone = true)).catch(() => undefined);
            await new Promise((r) => setTimeout(r, 100));
            expect(largeDone, 'the held session’s save waits for it').to.equal(false);
            await holder.rollback();
            expect(await largeSave).to.equal(large.id);
            expect((await store.load(large.id))!.version).to.equal(2);
          } finally {
            await holder.rollback().catch(() => undefined);
          }
        });
      }

      it('two saves of one session: the second applies after the first, and two from the same version cannot both win', async () => {
        const record = makeRecord();
        await store.create(record);
        const inTurn = await Promise.all([
          store.save({ ...record, version: 2, data: changedData(record, 2) }, 1),
          store.save({ ...record, version: 3, data: changedData(record, 3) }, 2),
        ]);
        expect(inTurn).to.deep.equal([record.id, record.id]);
        expect(await store.load(record.id)).to.deep.include({ version: 3 });
        expect((await store.load(record.id))!.data.platformId).to.equal(3);

        const rivals = await Promise.all([4, 5].map((platformId) => store.save({ ...record, version: 4, data: changedData(record, platformId) }, 3).catch((e: unknown) => e)));
        expect(rivals.filter((r) => r === record.id), 'saves that won').to.have.length(1);
        expect(rivals.filter((r) => r instanceof SessionConflictError), 'saves that conflicted').to.have.length(1);
        const winner = rivals[0] === record.id ? 4 : 5;
        expect((await store.load(record.id))!.data.platformId).to.equal(winner);
      });

      it('touches among them move only the idle expiry, and a save of the same session that came after them applies after', async () => {
        const records = Array.from({ length: 20 }, () => makeRecord());
        await Promise.all(records.map((r) => store.create(r)));
        const gone = records[5]!;
        await store.destroy(gone);
        const later = (r: SessionRecord, ms: number) => ({ ...r, lastActivity: r.lastActivity + ms, expiresAt: r.expiresAt + ms });
        const savedAfter = records[9]!;

        const results = await Promise.all([
          ...records.map((r) => store.touch(later(r, 60_000))),
          store.save({ ...later(savedAfter, 120_000), version: 2, data: changedData(savedAfter, 9) }, 1),
        ]);

        expect(results.pop()).to.equal(savedAfter.id);
        results.forEach((result, i) => expect(result, `touch ${i}`).to.equal(records[i] === gone ? undefined : records[i]!.id));
        const loaded = await Promise.all(records.map((r) => store.load(r.id)));
        loaded.forEach((record, i) => {
          if (records[i] === gone) return expect(record).to.equal(undefined);
          const r = records[i]!;
          const expected = r === savedAfter ? { ...later(r, 120_000), version: 2 } : { ...later(r, 60_000), version: 1 };
          expect(record, `session ${i}`).to.deep.include({ lastActivity: expected.lastActivity, expiresAt: expected.expiresAt, version: expected.version });
          expect(record!.data.platformId, `session ${i}`).to.equal(r === savedAfter ? 9 : r.data.platformId);
        });
      });
    });

    it('serves many calls at once', async () => {
      const records = Array.from({ length: 60 }, () => makeRecord());
      await Promise.all(records.map((r) => store.create(r)));
      const [loaded, saved] = await Promise.all([
        Promise.all(records.map((r) => store.load(r.id))),
        Promise.all(records.map((r) => store.save({ ...r, version: 2 }, 1))),
      ]);
      expect(loaded.every((r) => r !== undefined)).to.equal(true);
      expect(saved).to.deep.equal(records.map((r) => r.id));
      await store.upsertMany(records.map((r) => ({ ...r, version: 3 })));
      await Promise.all(records.map((r) => store.evict(r)));
      expect(await db.models.SessionRow.count({ where: { idHash: records.map((r) => r.idHash) } }), 'an eviction of an older version removes nothing').to.equal(60);
      await Promise.all(records.map((r) => store.evict({ ...r, version: 3 })));
      expect(await db.models.SessionRow.count({ where: { idHash: records.map((r) => r.idHash) } })).to.equal(0);
    });

    it('answers each of many loads at once with its own session, the missing and expired ones with nothing', async () => {
      // 150 loads arrive together and go out as statements of up to 64 ids: every answer must
      // still be the row of its own id, whatever statement and position it came from.
      const records = Array.from({ length: 140 }, (_, i) => makeRecord({ data: { ...makeRecord().data, platformId: i } }));
      await Promise.all(records.map((r) => store.create(r)));
      const expired = makeRecord({ expiresAt: Date.now() - 1000 });
      await store.create(expired);
      const missing = newSessionId();
      const asked = [...records.map((r) => r.id), missing, expired.id, ...records.slice(0, 8).map((r) => r.id)].sort(() => Math.random() - 0.5);

      const loaded = await Promise.all(asked.map((id) => store.load(id)));

      loaded.forEach((record, k) => {
        const id = asked[k];
        if (id === missing || id === expired.id) return expect(record, `load ${k}`).to.equal(undefined);
        const own = records.find((r) => r.id === id)!;
        expect(record, `load ${k}`).to.deep.include({ id, idHash: own.idHash, handle: own.handle, userId: own.userId });
        expect(record!.data.platformId, `load ${k}`).to.equal(own.data.platformId);
      });
    });

    if (name === 'PostgreSQL') {
      it('borrows a pooled connection for each call only, and gives it back when the statement fails', async () => {
        const pool = (db.sequelize.connectionManager as unknown as { pool: { using: number } }).pool;
        const record = makeRecord();
        await store.create(record);
        const broken = makeRecord({ userId: 'not a number' as unknown as number });
        const failure = await store.create(broken).catch((e: unknown) => e);
        expect(failure).to.be.instanceOf(Error);
        await Promise.all(Array.from({ length: 30 }, () => store.load(record.id)));
        expect(pool.using).to.equal(0);
      });

      it('answers a ping, a write check and the next reads at once after its pooled connections were ended (a failover, a pooler restart)', async () => {
        // Readiness asks right after the cut, before the pool has heard of it: a stale connection
        // answered "down", and with BREAKER_FAILURE_THRESHOLD=1 opened the breaker on a database
        // that was fine, so every read got 503.
        const database = db.sequelize.config.database;
        const admin = await connectPostgres(`postgres://postgres@127.0.0.1:5432/${database}`);
        admin.on('error', () => undefined);
        const kept = makeRecord();
        await store.create(kept);
        try {
          for (let round = 0; round < 10; round++) {
            // Five connections in the pool (the test's own query may meet one ended last round).
            await Promise.allSettled(Array.from({ length: 5 }, () => db.sequelize.query('SELECT pg_sleep(0.01)')));
            await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]);
            // And the reads of the requests that come next. (A write sent on an ended connection
            // may fail: it is not sent twice, README "Status and known limits".)
            await Promise.all([store.ping(), store.writable(), store.load(kept.id), store.listByUser(kept.userId)]);
          }
        } finally {
          await admin.end();
        }
      });
    }
  });
}

describe('DatabaseStore on SQLite: the connection with the store’s statements on it', function () {
  this.timeout(30_000);

  /** sqlite3's own close, past the hook the store adds: it refuses while any statement is unfinalized. */
  function closeConnection(db: TestDb) {
    return new Promise<void>((resolve, reject) => {
      void db.sequelize.connectionManager.getConnection({ type: 'write' }).then((raw) => {
        sqlite3.Database.prototype.close.call(raw as sqlite3.Database, (err) => (err ? reject(err) : resolve()));
      }, reject);
    });
  }

  it('leaves no read transaction open after a load (the WAL can be checkpointed and truncated)', async () => {
    const db = await sqliteDb();
    const store = new DatabaseStore(db.models);
    try {
      const record = makeRecord();
      await store.create(record);
      expect(await store.load(record.id)).to.not.equal(undefined);
      const file = (db.sequelize as unknown as { options: { storage: string } }).options.storage;
      const other = await new Promise<sqlite3.Database>((resolve, reject) => {
        const opened: sqlite3.Database = new sqlite3.Database(file, (err) => (err ? reject(err) : resolve(opened)));
      });
      try {
        const all = (sql: string) => new Promise<Record<string, number>[]>((resolve, reject) => other.all<Record<string, number>>(sql, (err, rows) => (err ? reject(err) : resolve(rows))));
        // No waiting: a reader still open on the store's connection must show as busy at once.
        await all('PRAGMA busy_timeout = 0');
        const [checkpoint] = await all('PRAGMA wal_checkpoint(TRUNCATE)');
        expect(checkpoint).to.deep.include({ busy: 0 });
      } finally {
        await new Promise<void>((resolve) => other.close(() => resolve()));
      }
    } finally {
      await store.close();
      await db.close();
    }
  });

  /** The statements matching `pattern` that sqlite3 ran on the store's connection during `work`. */
  async function traced(db: TestDb, pattern: RegExp, work: () => Promise<void>): Promise<string[]> {
    const connection = (await db.sequelize.connectionManager.getConnection({ type: 'write' })) as sqlite3.Database;
    const seen: string[] = [];
    let sentinelSeen: () => void = () => undefined;
    const trace = (sql: string) => {
      if (pattern.test(sql)) seen.push(sql);
      if (sql.includes('trace_sentinel')) sentinelSeen();
    };
    connection.on('trace', trace);
    try {
      await work();
      // sqlite3 delivers trace events on a queue of their own, in order, but not in step with
      // results: once a statement run after the work has been traced, so has the work.
      const sentinel = new Promise<void>((resolve) => (sentinelSeen = resolve));
      connection.run('SELECT 1 AS trace_sentinel');
      await sentinel;
      return seen;
    } finally {
      connection.removeListener('trace', trace);
    }
  }

  it('reads the sessions of requests that arrive together in one statement, not one each', async () => {
    const db = await sqliteDb();
    const store = new DatabaseStore(db.models);
    try {
      const records = Array.from({ length: 100 }, () => makeRecord());
      await Promise.all(records.map((r) => store.create(r)));
      const loads = await traced(db, /^SELECT .* id_hash IN/s, async () => {
        const loaded = await Promise.all(records.map((r) => store.load(r.id)));
        expect(loaded.map((r) => r?.id)).to.deep.equal(records.map((r) => r.id));
      });
      expect(loads, 'load statements for 100 loads at once').to.have.length(2);
    } finally {
      await store.close();
      await db.close();
    }
  });

  it('writes the saves, and the touches, of requests that arrive together in one statement, not one each', async () => {
    const db = await sqliteDb();
    const store = new DatabaseStore(db.models);
    try {
      const records = Array.from({ length: 100 }, () => makeRecord());
      await Promise.all(records.map((r) => store.create(r)));
      const updates = await traced(db, /UPDATE sessions/, async () => {
        const saved = await Promise.all(records.map((r) => store.save({ ...r, version: 2 }, 1)));
        expect(saved).to.deep.equal(records.map((r) => r.id));
      });
      expect(updates, 'update statements for 100 saves at once').to.have.length(2);
      const touches = await traced(db, /UPDATE sessions/, async () => {
        const touched = await Promise.all(records.map((r) => store.touch({ ...r, lastActivity: r.lastActivity + 1000 })));
        expect(touched).to.deep.equal(records.map((r) => r.id));
      });
      expect(touches, 'update statements for 100 touches at once').to.have.length(2);
      const loaded = await Promise.all(records.map((r) => store.load(r.id)));
      expect(loaded.map((r) => r?.version)).to.deep.equal(records.map(() => 2));
    } finally {
      await store.close();
      await db.close();
    }
  });

  it('close() finalizes every statement, and the store prepares them again if used after', async () => {
    const db = await sqliteDb();
    const store = new DatabaseStore(db.models);
    const record = makeRecord();
    await store.create(record);
    await store.load(record.id);
    await store.close();
    expect(await store.load(record.id)).to.not.equal(undefined);
    const refused = await closeConnection(db).catch((e: unknown) => e);
    expect(refused).to.have.property('code', 'SQLITE_BUSY');
    await store.close();
    await closeConnection(db);
    // Closed under Sequelize's feet: its own close would only find it closed already.
    rmSync(path.dirname((db.sequelize as unknown as { options: { storage: string } }).options.storage), { recursive: true, force: true });
  });

  it("the application's sequelize.close() works without the store being closed, and the store then fails rather than hangs", async () => {
    const db = await sqliteDb();
    const store = new DatabaseStore(db.models);
    const record = makeRecord();
    await store.create(record);
    await Promise.all([store.load(record.id), store.touch({ ...record, lastActivity: Date.now() }), store.upsertMany([makeRecord({}, 'redis')])]);
    await db.close();
    const after = await store.load(record.id).catch((e: unknown) => e);
    expect(after).to.be.instanceOf(Error);
  });
});

/**
 * Another process holding the SQLite file (an operator's sqlite3 shell, a backup) past the busy
 * timeout makes a statement fail with SQLITE_BUSY. That failure must stay one failure: a
 * statement left active kept the connection's transaction open, and every later write of the
 * app went into it — unseen by other processes, and lost at restart (a logout that came back).
 */
describe('DatabaseStore on SQLite after another process held the database', function () {
  this.timeout(30_000);
  let dir: string | undefined;
  let sequelize: Sequelize | undefined;
  after(async () => {
    await sequelize?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('commits the writes that follow a statement refused as busy', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-busy-'));
    const file = path.join(dir, 'db.sqlite');
    sequelize = await openDatabase(`sqlite:${file}`);
    await migrateUp(sequelize);
    const store = new DatabaseStore(defineModels(sequelize));
    const first = makeRecord();
    await store.create(first);
    const other = new sqlite3.Database(file);
    const exec = (db: sqlite3.Database, sql: string) => new Promise<void>((resolve, reject) => db.exec(sql, (err) => (err ? reject(err) : resolve())));
    await exec(other, "BEGIN EXCLUSIVE; INSERT INTO settings (name, value) VALUES ('held', '1')");
    const refused = await store.destroy(first).catch((err: unknown) => err);
    expect(String(refused)).to.include('SQLITE_BUSY');
    await exec(other, 'ROLLBACK');
    const later = makeRecord();
    await store.create(later);
    const seen = await new Promise<unknown[]>((resolve, reject) => other.all('SELECT id_hash FROM sessions', (err, rows) => (err ? reject(err) : resolve(rows))));
    other.close();
    expect(seen.map((row) => (row as { id_hash: string }).id_hash)).to.have.members([first.idHash, later.idHash]);
  });
});
