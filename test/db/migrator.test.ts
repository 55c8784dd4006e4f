/**
 * Instances started at the same moment on a new database both apply the migrations: one wins
 * each statement, and the other must start all the same, not stop on "index already exists".
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { migrateUp, migrator, pendingMigrations } from '../../src/db/migrator.js';
import { createTestDatabase, withPostgres } from '../support/postgres.js';
import { migrations } from '../../migrations/index.js';
import { QueryTypes } from 'sequelize';

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

describe('migration runs taking turns (PostgreSQL)', function () {
  this.timeout(60_000);

  it('each reports only the migrations it applied itself', async () => {
    for (let round = 0; round < 3; round++) {
      const db = await createTestDatabase('migrate_turns');
      const [a, b] = [await openDatabase(db.url), await openDatabase(db.url)];
      try {
        const applied = await Promise.all([migrateUp(a), migrateUp(b)]);
        expect(applied.flat().sort(), 'each migration reported once, by the run that applied it').to.deep.equal(migrations.map((m) => m.name).sort());
      } finally {
        await Promise.all([a.close(), b.close()]);
        await db.drop();
      }
    }
  });

  it("waits for another run's migration that takes longer than the connection's lock_timeout", async () => {
    const db = await createTestDatabase('migrate_wait');
    const sequelize = await openDatabase(db.url);
    try {
      // Another run's long migration, as far as the lock goes: held for 9 s (more than the three
      // attempts of 2 s lock_timeout and their pauses).
      const held = withPostgres(db.url, async (other) => {
        await other.query('BEGIN');
        await other.query("SELECT pg_advisory_xact_lock(hashtext('switchboard schema_migrations'))");
        await new Promise((resolve) => setTimeout(resolve, 9_000));
        await other.query('COMMIT');
      });
      // Started once the other holds the lock.
      for (let tries = 0; tries < 200; tries++) {
        const [lock] = await sequelize.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted", { type: QueryTypes.SELECT });
        if (lock?.n === 1) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(await migrateUp(sequelize)).to.deep.equal(migrations.map((m) => m.name));
      await held;
      const [row] = await sequelize.query<{ lock_timeout: string }>('SHOW lock_timeout', { type: QueryTypes.SELECT });
      expect(row?.lock_timeout, "the connection's own lock_timeout is left as it was").to.equal('2s');
    } finally {
      await sequelize.close();
      await db.drop();
    }
  });
});

describe('a migration run stopped halfway', function () {
  this.timeout(60_000);

  it('leaves nothing half-done: the next run applies the rest, and the server can start again (PostgreSQL)', async () => {
    // A run that stops between two statements of one migration (Ctrl-C, a deploy job killed),
    // made certain: an event trigger fails the statement that creates `flag_overrides`, after
    // 002 has created `revocations` and its index. Before, those stayed without 002's row, and
    // every later run, the server's start-up included, failed on "already exists".
    const db = await createTestDatabase('migrate_stopped');
    const sequelize = await openDatabase(db.url);
    try {
      await withPostgres(db.url, (admin) =>
        admin.query(`
          CREATE FUNCTION stop_at_flag_overrides() RETURNS event_trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity LIKE '%flag_overrides') THEN
              RAISE EXCEPTION 'the run stops here';
            END IF;
          END $$;
          CREATE EVENT TRIGGER stop_migration ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION stop_at_flag_overrides();`),
      );
      const stopped = await migrateUp(sequelize).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(stopped, 'the run stopped').to.be.instanceOf(Error);
      expect(await pendingMigrations(sequelize), 'what was not finished is still pending').to.include('002-revocations-and-flags');
      await withPostgres(db.url, (admin) => admin.query('DROP EVENT TRIGGER stop_migration'));

      expect(await migrateUp(sequelize)).to.include('002-revocations-and-flags');
      expect(await migrator(sequelize).pending()).to.deep.equal([]);
    } finally {
      await sequelize.close();
      await db.drop();
    }
  });
});
