/**
 * Which database errors are an outage (503, the breaker, the fallback) rather than a bug (500):
 * the errors PostgreSQL and node-postgres really raise when a connection is lost, produced here
 * on a real server by ending the connection under a client that then sends a statement.
 */
import { expect } from 'chai';
import pg from 'pg';
import { Sequelize } from 'sequelize';
import { isDatabaseOutageError } from '../../src/db/database.js';
import { createTestDatabase, ensureServices, withPostgres, type TestDatabase } from '../support/postgres.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('database errors that mean the database cannot be used right now', function () {
  this.timeout(30_000);
  let db: TestDatabase;

  before(async () => {
    await ensureServices();
    db = await createTestDatabase('database_errors');
  });
  after(() => db?.drop());

  const terminate = (pid: number) => withPostgres(db.url, (admin) => admin.query('SELECT pg_terminate_backend($1)', [pid]));

  it('takes "not queryable" (a connection that failed just after the pool lent it) through Sequelize as an outage', async () => {
    const sequelize = new Sequelize(db.url, { logging: false });
    try {
      // A transaction keeps the statement on the connection whose server side is ended.
      const transaction = await sequelize.transaction();
      const [rows] = await sequelize.query('SELECT pg_backend_pid() AS pid', { transaction });
      await terminate((rows as Array<{ pid: number }>)[0]!.pid);
      await sleep(300);
      const failed = await sequelize.query('SELECT 1', { transaction }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((failed as Error).message).to.match(/not queryable|Connection terminated/);
      expect(isDatabaseOutageError(failed), (failed as Error).message).to.equal(true);
    } finally {
      await sequelize.close();
    }
  });

  it('takes node-postgres’s own errors for a lost connection as an outage too', async () => {
    const client = new pg.Client({ connectionString: db.url });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await terminate(rows[0]!.pid);
      await sleep(300);
      const failed = await client.query('SELECT 1').then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(failed, 'the statement failed').to.be.instanceOf(Error);
      expect(isDatabaseOutageError(failed), (failed as Error).message).to.equal(true);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('does not take a statement the database refused as an outage', async () => {
    const sequelize = new Sequelize(db.url, { logging: false });
    try {
      const failed = await sequelize.query('SELECT * FROM no_such_table').then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(isDatabaseOutageError(failed)).to.equal(false);
    } finally {
      await sequelize.close();
    }
  });
});
