import { createTestDatabase } from './postgres.js';
import { startSlowLink } from './slow-link.js';

/**
 * A new test database that the app reaches through a SlowLink, so a test can slow its answers
 * or cut the app off from it (the test's own queries, on `url`, go around the link).
 */
export interface LinkedDatabase {
  /** The database's own URL, for the test's queries. */
  readonly url: string;
  /** The database's URL through the link: the app's DATABASE_URL. */
  readonly appUrl: string;
  /** The app's connections dropped and new ones refused, until `restore`. */
  cut(): Promise<void>;
  /** The app's connections kept but nothing passed, until `restore`. */
  stall(): void;
  restore(): Promise<void>;
  /** Closes the link and drops the database. */
  close(): Promise<void>;
}

/** `delayMs`: every answer of the database handed to the app that late. */
export async function createLinkedDatabase(prefix: string, delayMs = 0): Promise<LinkedDatabase> {
  const db = await createTestDatabase(prefix);
  const link = await startSlowLink({ host: '127.0.0.1', port: 5432 }, delayMs);
  return {
    url: db.url,
    appUrl: db.url.replace(':5432/', `:${link.port}/`),
    cut: () => link.cut(),
    stall: () => link.stall(),
    restore: () => link.restore(),
    close: async () => {
      await link.close();
      await db.drop();
    },
  };
}
