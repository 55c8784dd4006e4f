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
  });
}
