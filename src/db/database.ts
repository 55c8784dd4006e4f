/**
 * The Sequelize connection: SQLite (WAL, the embedded default) or PostgreSQL, from DATABASE_URL.
 */
import path from 'node:path';
import { Sequelize } from 'sequelize';
import { makeDirectory } from '../config/make-directory.js';

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
    try {
      for (const pragma of ['PRAGMA journal_mode=WAL', 'PRAGMA synchronous=NORMAL', 'PRAGMA busy_timeout=5000']) {
        await sequelize.query(pragma);
      }
    } catch (err) {
      // Not awaited: closing a SQLite handle that never opened does not settle.
      void sequelize.close().catch(() => undefined);
      throw new Error(`DATABASE_URL: cannot open the SQLite file ${file} (${reason(err)})`);
    }
    return sequelize;
  }
  const sequelize = new Sequelize(url, {
    dialect: 'postgres',
    logging: false,
    pool: { max: 10, min: 0, idle: 10_000, acquire: 5_000 },
  });
  try {
    await sequelize.authenticate();
  } catch (err) {
    await sequelize.close().catch(() => undefined);
    throw new Error(`DATABASE_URL: cannot connect to PostgreSQL at ${withoutCredentials(url)} (${reason(err)})`);
  }
  return sequelize;
}

/** The driver's code (ECONNREFUSED, SQLITE_CANTOPEN, 28P01…) or first line: what to fix, no stack. */
function reason(err: unknown): string {
  const e = err as { original?: { code?: string }; parent?: { code?: string }; message?: string };
  const code = e.original?.code ?? e.parent?.code;
  const message = String(e.message ?? err).split('\n')[0] ?? '';
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/** The URL as it may be printed: a password never is. */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname}`;
  } catch {
    return 'the configured address';
  }
}
