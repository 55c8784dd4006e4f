/**
 * Instances started at the same moment on a new database both apply the migrations: one wins
 * each statement, and the other must start all the same, not stop on "index already exists".
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { migrateUp, migrator } from '../../src/db/migrator.js';
import { createTestDatabase } from '../support/postgres.js';

describe('migrations applied by two instances starting together', function () {
  this.timeout(60_000);

  const race = async (url: string) => {
    const [a, b] = [await openDatabase(url), await openDatabase(url)];
    try {
      const applied = await Promise.all([migrateUp(a), migrateUp(b)]);
      expect(applied.flat().length, 'each migration applied once or twice, none lost').to.be.at.least((await migrator(a).executed()).length);
      expect(await migrator(a).pending()).to.deep.equal([]);
      expect(await migrator(b).pending()).to.deep.equal([]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  };

  it('on a new SQLite file', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = mkdtempSync(path.join(tmpdir(), 'switchboard-migrate-'));
      try {
        await race(`sqlite:${path.join(dir, 'db.sqlite')}`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('on a new PostgreSQL database', async () => {
    for (let round = 0; round < 3; round++) {
      const db = await createTestDatabase('migrate_race');
      try {
        await race(db.url);
      } finally {
        await db.drop();
      }
    }
  });
});
