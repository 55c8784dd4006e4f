/**
 * The node-postgres client Sequelize is given (src/db/postgres-driver.ts): a connection whose
 * statement passed `query_timeout` is not lent again. pg fails the call but the statement goes
 * on running there; lent again, the connection ran the next calls only after it, each failing
 * on its own timeout meanwhile (a stalled database, a statement stuck behind a lock).
 */
import { expect } from 'chai';
import { Sequelize } from 'sequelize';
import { postgresDriver } from '../../src/db/postgres-driver.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('PostgreSQL connections whose statement timed out', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let sequelize: Sequelize | undefined;
  before(async () => {
    db = await createTestDatabase('query_timeout');
  });
  after(async () => {
    await sequelize?.close().catch(() => undefined);
    await db?.drop();
  });

  it('are not lent again: the next call runs at once on a new connection', async () => {
    // One connection in the pool, so that the next call would get the same one; borrowed as the
    // store's prepared statements borrow it (database-statements.ts, withClient), not through
    // Sequelize's own queries, which mark such a connection themselves.
    sequelize = new Sequelize(db.url, { dialect: 'postgres', dialectModule: postgresDriver, logging: false, pool: { max: 1, min: 0 }, dialectOptions: { query_timeout: 500 } });
    const manager = sequelize.connectionManager;
    const call = async (text: string) => {
      const client = (await manager.getConnection({ type: 'write' })) as unknown as { query(config: { text: string }): Promise<{ rows: unknown[] }> };
      try {
        return (await client.query({ text })).rows;
      } catch (err) {
        return (err as Error).message;
      } finally {
        manager.releaseConnection(client as never);
      }
    };
    expect(await call('SELECT pg_sleep(5)')).to.equal('Query read timeout');
    expect(await call('SELECT 1 AS one')).to.deep.equal([{ one: 1 }]);
  });
});
