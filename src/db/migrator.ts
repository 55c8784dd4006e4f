import { QueryTypes, Transaction, type Sequelize } from 'sequelize';
import { Umzug, type UmzugStorage } from 'umzug';
import { migrations } from '../../migrations/index.js';

const TABLE = 'schema_migrations';

/**
 * Which migrations have run, in `schema_migrations` (one `name` column, as umzug's
 * SequelizeStorage made it, so databases migrated before read the same). Each migration runs in
 * one transaction with the write of its row (`inTransaction`): a run stopped halfway (Ctrl-C, a
 * deploy job killed) leaves every migration either done and recorded or not begun. Before, it
 * could leave a table or index without its row, and every later run — and every instance's
 * start-up — failed on "already exists".
 */
class MigrationLog implements UmzugStorage {
  constructor(private readonly sequelize: Sequelize) {}

  async executed(): Promise<string[]> {
    // Only read: a script that finds the schema behind and stops leaves no table behind it.
    if (!(await this.sequelize.getQueryInterface().tableExists(TABLE))) return [];
    const rows = await this.sequelize.query<{ name: string }>(`SELECT name FROM ${TABLE} ORDER BY name`, { type: QueryTypes.SELECT });
    return rows.map((row) => row.name);
  }

  // Written by inTransaction, in the migration's own transaction.
  async logMigration(): Promise<void> {}
  async unlogMigration(): Promise<void> {}

  /**
   * `work` (a migration's up or down) and its row, in one transaction; skipped if another run
   * did it since this one read the list (two deploy jobs, instances starting together).
   */
  async inTransaction(name: string, direction: 'up' | 'down', work: (transaction: Transaction) => Promise<void>): Promise<boolean> {
    let ran = false;
    await this.inLock(async (transaction) => {
      await this.sequelize.query(`CREATE TABLE IF NOT EXISTS ${TABLE} (name VARCHAR(255) NOT NULL PRIMARY KEY)`, { transaction });
      const recorded = await this.sequelize.query(`SELECT 1 AS found FROM ${TABLE} WHERE name = ?`, { replacements: [name], type: QueryTypes.SELECT, transaction });
      if ((recorded.length > 0) === (direction === 'up')) return;
      await work(transaction);
      const statement = direction === 'up' ? `INSERT INTO ${TABLE} (name) VALUES (?)` : `DELETE FROM ${TABLE} WHERE name = ?`;
      await this.sequelize.query(statement, { replacements: [name], transaction });
      ran = true;
    });
    return ran;
  }

  /**
   * A transaction that runs alone among migration runs on this database: PostgreSQL's advisory
   * lock until it ends; SQLite's write lock from its start (IMMEDIATE), which is the whole file's.
   */
  private inLock(work: (transaction: Transaction) => Promise<void>): Promise<void> {
    const postgres = this.sequelize.getDialect() === 'postgres';
    return this.sequelize.transaction(postgres ? {} : { type: Transaction.TYPES.IMMEDIATE }, async (transaction) => {
      if (postgres) {
        // Waited for however long the other run's migration takes: the connection's lock_timeout
        // (2 s, database.ts) is for requests, and made a second run fail ("canceling statement due
        // to lock timeout") once another's migration outlasted its three attempts. The
        // migration's own statements keep the 2 s.
        await this.sequelize.query('SET LOCAL lock_timeout = 0', { transaction });
        await this.sequelize.query(`SELECT pg_advisory_xact_lock(hashtext('switchboard ${TABLE}'))`, { transaction });
        await this.sequelize.query('SET LOCAL lock_timeout TO DEFAULT', { transaction });
      }
      await work(transaction);
    });
  }
}

/**
 * `ran`, if given, collects the names of the migrations this run applied or reverted itself: umzug
 * reports every migration it found pending, including those another run did meanwhile.
 */
export function migrator(sequelize: Sequelize, ran: string[] = []) {
  const qi = sequelize.getQueryInterface();
  const log = new MigrationLog(sequelize);
  const noting = (name: string) => (done: boolean) => {
    if (done) ran.push(name);
  };
  return new Umzug({
    migrations: migrations.map((m) => ({
      name: m.name,
      up: () => log.inTransaction(m.name, 'up', (transaction) => m.up({ context: qi, transaction })).then(noting(m.name)),
      down: () => log.inTransaction(m.name, 'down', (transaction) => m.down({ context: qi, transaction })).then(noting(m.name)),
    })),
    context: qi,
    storage: log,
    logger: undefined,
  });
}

/**
 * Applies pending migrations; returns their names. Runs that race on one database (instances
 * started together, a deploy job) take turns (MigrationLog); a failed run is still tried again
 * after a moment — a SQLite file another process keeps busy past its retries — and what another
 * run applied meanwhile is then not pending, while a real failure fails again.
 */
export async function migrateUp(sequelize: Sequelize): Promise<string[]> {
  // Those this run applied itself, across attempts (an attempt that failed kept what it committed).
  const ran: string[] = [];
  for (let attempt = 1; ; attempt++) {
    try {
      await migrator(sequelize, ran).up();
      return ran;
    } catch (err) {
      if (attempt >= 3) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

/** A database not migrated to this release's schema, where the caller does not migrate it. */
export class SchemaBehindError extends Error {
  constructor(readonly pending: string[]) {
    super(`DATABASE_URL: the database's schema is behind this release (not applied: ${pending.join(', ')}); run npm run migrate first`);
    this.name = 'SchemaBehindError';
  }
}

/** The migrations not yet applied to this database. */
export async function pendingMigrations(sequelize: Sequelize): Promise<string[]> {
  return (await migrator(sequelize).pending()).map((m) => m.name);
}
