/**
 * The deployment id (src/db/deployment.ts): one per database, the same for every instance
 * sharing it, even when they start at the same moment.
 */
import { expect } from 'chai';
import { deploymentId } from '../../src/db/deployment.js';
import { postgresDb, sqliteDb, type TestDb } from '../sessions/fixtures.js';

for (const [kind, open] of [['SQLite', sqliteDb], ['PostgreSQL', postgresDb]] as const) {
  describe(`the deployment id on ${kind}`, () => {
    const dbs: TestDb[] = [];
    after(async () => {
      for (const db of dbs) await db.close();
    });

    it('is drawn once per database: instances starting together all read the same one', async () => {
      const db = await open();
      dbs.push(db);
      const ids = await Promise.all(Array.from({ length: 5 }, () => deploymentId(db.models)));
      expect(new Set(ids).size).to.equal(1);
      expect(ids[0]).to.match(/^[\w-]{12}$/);
      expect(await deploymentId(db.models)).to.equal(ids[0], 'and kept');
    });

    it('differs between databases', async () => {
      const [one, two] = [await open(), await open()];
      dbs.push(one, two);
      expect(await deploymentId(one.models)).to.not.equal(await deploymentId(two.models));
    });
  });
}
