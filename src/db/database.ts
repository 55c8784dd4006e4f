/**
 * The Sequelize connection: SQLite (WAL, the embedded default) or PostgreSQL, from DATABASE_URL.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Sequelize } from 'sequelize';

/**
 * mkdir -p, one level at a time: Node's own `recursive` mkdir spins forever on a path under a
 * directory that refuses new entries with ENOENT (/proc), and start-up would hang in silence.
 */
function makeDirectory(dir: string) {
  try {
    mkdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || path.dirname(dir) === dir) throw err;
    makeDirectory(path.dirname(dir));
    mkdirSync(dir);
  }
}

export async function openDatabase(url: string): Promise<Sequelize> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (file !== ':memory:') {
      try {
        makeDirectory(path.dirname(path.resolve(file)));
      } catch (err) {
        throw new Error(`DATABASE_URL: cannot create the folder for ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
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
