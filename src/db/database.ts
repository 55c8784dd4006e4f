/**
 * The Sequelize connection: SQLite (WAL, the embedded default) or PostgreSQL, from DATABASE_URL.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Sequelize } from 'sequelize';

export async function openDatabase(url: string): Promise<Sequelize> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (file !== ':memory:') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    // Sequelize keeps one connection per SQLite file; WAL lets readers go on while it writes.
    const sequelize = new Sequelize({ dialect: 'sqlite', storage: file, logging: false, retry: { max: 5, match: [/SQLITE_BUSY/] } });
    for (const pragma of ['PRAGMA journal_mode=WAL', 'PRAGMA synchronous=NORMAL', 'PRAGMA busy_timeout=5000']) {
      await sequelize.query(pragma);
    }
    return sequelize;
  }
  const sequelize = new Sequelize(url, {
    dialect: 'postgres',
    logging: false,
    pool: { max: 10, min: 0, idle: 10_000, acquire: 5_000 },
  });
  await sequelize.authenticate();
  return sequelize;
}
