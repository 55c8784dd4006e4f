import { expect } from 'chai';
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
