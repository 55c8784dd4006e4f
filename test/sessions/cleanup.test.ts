import { expect } from 'chai';
import { deleteEventsBefore } from '../../src/sessions/audit.js';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { makeRecord, postgresDb, sqliteDb, type TestDb } from './fixtures.js';

for (const [name, open] of [
  ['SQLite', sqliteDb],
  ['PostgreSQL', postgresDb],
] as const) {
  describe(`deleting expired sessions in batches (${name})`, function () {
    this.timeout(30_000);
    let db: TestDb;
    before(async () => {
      db = await open();
    });
    after(() => db?.close());

    it('removes only what expired, a batch at a time', async () => {
      const store = new DatabaseStore(db.models);
      const now = Date.now();
      const live = [makeRecord(), makeRecord()];
      for (const r of live) await store.create(r);
      for (let i = 0; i < 5; i++) await store.create(makeRecord({ lastActivity: now - 10_000, expiresAt: now - 1000 }));
      const batches: number[] = [];
      for (let n = await store.deleteExpired(2); n > 0; n = await store.deleteExpired(2)) batches.push(n);
      expect(batches).to.deep.equal([2, 2, 1]);
      expect(await db.models.SessionRow.count()).to.equal(2);
      for (const r of live) expect(await store.load(r.id)).to.not.equal(undefined);
    });

    it('deletes audit rows older than the retention, oldest first, a batch at a time, and keeps the rest', async () => {
      const day = 86_400_000;
      const event = (daysAgo: number) => ({ type: 'destroyed', userId: 1, handle: `h${daysAgo}`, backend: 'redis', actor: 'user:1', reason: 'logout', count: 1, ip: null, userAgent: null, createdAt: new Date(Date.now() - daysAgo * day) });
      await db.models.SessionEvent.destroy({ where: {} });
      await db.models.SessionEvent.bulkCreate([200, 120, 95, 91, 89, 10, 0].map(event));
      const before = new Date(Date.now() - 90 * day);
      const batches: number[] = [];
      for (let n = await deleteEventsBefore(db.models, before, 3); n > 0; n = await deleteEventsBefore(db.models, before, 3)) batches.push(n);
      expect(batches).to.deep.equal([3, 1]);
      const left = await db.models.SessionEvent.findAll({ order: [['id', 'ASC']] });
      expect(left.map((e) => e.handle)).to.deep.equal(['h89', 'h10', 'h0']);
    });

    if (name === 'PostgreSQL') {
      it('never waits for a row a request holds: that one is left for a later batch', async () => {
        const store = new DatabaseStore(db.models);
        const now = Date.now();
        const expired = [0, 1, 2].map(() => makeRecord({ lastActivity: now - 10_000, expiresAt: now - 1000 }));
        for (const r of expired) await store.create(r);
        // A request's write in progress holds one of them (as a batched save locks its rows).
        const holder = await db.sequelize.transaction();
        try {
          await db.sequelize.query('SELECT 1 FROM sessions WHERE id_hash = ? FOR UPDATE', { replacements: [expired[1]!.idHash], transaction: holder });
          // Waiting for the lock, this would never return while the holder is open: the test would time out.
          expect(await store.deleteExpired(10)).to.equal(2);
        } finally {
          await holder.rollback();
        }
        expect(await store.deleteExpired(10), 'the row left, once released').to.equal(1);
        expect(await db.models.SessionRow.count({ where: { idHash: expired.map((r) => r.idHash) } })).to.equal(0);
      });
    }
  });
}
