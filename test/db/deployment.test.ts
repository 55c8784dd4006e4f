/**
 * The deployment id (src/db/deployment.ts): one per database, the same for every instance
 * sharing it, even when they start at the same moment.
 */
import { expect } from 'chai';
import { deploymentId, noteSigningRelease, ROLLING_UPGRADE_MS, unboundCookiesBefore, unsignedIdsBefore } from '../../src/db/deployment.js';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { makeRecord, postgresDb, sqliteDb, type TestDb } from '../sessions/fixtures.js';

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

    it('opens no unbound cookies in a deployment drawn by a release that binds them', async () => {
      const db = await open();
      dbs.push(db);
      await deploymentId(db.models);
      expect(await unboundCookiesBefore(db.models)).to.equal(0);
      expect(await unsignedIdsBefore(db.models), 'nor unsigned ids').to.equal(0);
    });

    it('opens unbound cookies issued until an hour after an older deployment first ran this release, and keeps that instant', async () => {
      const db = await open();
      dbs.push(db);
      // A deployment id drawn by an earlier release, which had no such setting.
      await db.models.Setting.create({ name: 'deployment_id', value: 'drawn-before' });
      const upgradedAt = Date.now();
      expect(await unboundCookiesBefore(db.models, upgradedAt)).to.equal(upgradedAt + ROLLING_UPGRADE_MS);
      expect(await unboundCookiesBefore(db.models, upgradedAt + 5_000), 'a later instance reads the same').to.equal(upgradedAt + ROLLING_UPGRADE_MS);
      expect(await deploymentId(db.models)).to.equal('drawn-before');
      // Unsigned ids, the same way, from the first release that signs them.
      const signingSince = upgradedAt + 60_000;
      expect(await unsignedIdsBefore(db.models, signingSince)).to.equal(signingSince + ROLLING_UPGRADE_MS);
      expect(await unsignedIdsBefore(db.models, signingSince + 5_000)).to.equal(signingSince + ROLLING_UPGRADE_MS);
    });

    it('treats a database that has sessions but no deployment id as an older release upgrading, not as new', async () => {
      const db = await open();
      dbs.push(db);
      await new DatabaseStore(db.models).create(makeRecord());
      const upgradedAt = Date.now();
      await deploymentId(db.models);
      expect(await unboundCookiesBefore(db.models, upgradedAt)).to.equal(upgradedAt + ROLLING_UPGRADE_MS);
      expect(await unsignedIdsBefore(db.models, upgradedAt)).to.equal(upgradedAt + ROLLING_UPGRADE_MS);
    });

    describe('an upgrade to signed ids rolled back after its hour, then tried again', () => {
      const HOUR = 60 * 60 * 1000;
      /** A deployment whose first signing release started at `firstTry` (its instances noting so then). */
      async function upgradedAt(firstTry: number) {
        const db = await open();
        dbs.push(db);
        await db.models.Setting.create({ name: 'deployment_id', value: 'drawn-before' });
        expect(await unsignedIdsBefore(db.models, firstTry)).to.equal(firstTry + ROLLING_UPGRADE_MS);
        return db;
      }

      it('opens the sessions the older release issued alone meanwhile, and issues unsigned ids for another hour', async () => {
        const firstTry = Date.now() - 5 * HOUR;
        const db = await upgradedAt(firstTry);
        // Rolled back: the older release alone logs people in, hours later.
        await new DatabaseStore(db.models).create(makeRecord({ issuedAt: firstTry + 3 * HOUR, createdAt: firstTry + 3 * HOUR, lastActivity: firstTry + 3 * HOUR }));
        const secondTry = firstTry + 4 * HOUR;
        expect(await unsignedIdsBefore(db.models, secondTry)).to.equal(secondTry + ROLLING_UPGRADE_MS);
        expect(await unsignedIdsBefore(db.models, secondTry + 5_000), "the second try's other instances read the same").to.equal(secondTry + ROLLING_UPGRADE_MS);
      });

      it('starts it again too when the older release only served sessions issued before (their activity is later)', async () => {
        const firstTry = Date.now() - 5 * HOUR;
        const db = await upgradedAt(firstTry);
        await new DatabaseStore(db.models).create(makeRecord({ issuedAt: firstTry - HOUR, createdAt: firstTry - HOUR, lastActivity: firstTry + 3 * HOUR }));
        const secondTry = firstTry + 4 * HOUR;
        expect(await unsignedIdsBefore(db.models, secondTry)).to.equal(secondTry + ROLLING_UPGRADE_MS);
      });

      it('keeps the hour it had when nothing was issued while no signing release ran (a restart after downtime)', async () => {
        const firstTry = Date.now() - 5 * HOUR;
        const db = await upgradedAt(firstTry);
        await new DatabaseStore(db.models).create(makeRecord({ issuedAt: firstTry + 60_000, createdAt: firstTry + 60_000, lastActivity: firstTry + 90_000 }));
        expect(await unsignedIdsBefore(db.models, firstTry + 4 * HOUR)).to.equal(firstTry + ROLLING_UPGRADE_MS);
      });

      it('keeps it when a signing release was running all along (an older one beside it past the hour is the documented limit)', async () => {
        const firstTry = Date.now() - 5 * HOUR;
        const db = await upgradedAt(firstTry);
        await new DatabaseStore(db.models).create(makeRecord({ issuedAt: firstTry + 3 * HOUR, createdAt: firstTry + 3 * HOUR, lastActivity: firstTry + 3 * HOUR }));
        await noteSigningRelease(db.models, firstTry + 4 * HOUR - 30_000);
        expect(await unsignedIdsBefore(db.models, firstTry + 4 * HOUR)).to.equal(firstTry + ROLLING_UPGRADE_MS);
      });
    });

    it('differs between databases', async () => {
      const [one, two] = [await open(), await open()];
      dbs.push(one, two);
      expect(await deploymentId(one.models)).to.not.equal(await deploymentId(two.models));
    });
  });
}
