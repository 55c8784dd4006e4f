/** Builders shared by the session tests: records, and the database a store test runs on. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Sequelize } from 'sequelize';
import type { BackendName } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/database.js';
import { migrateUp } from '../../src/db/migrator.js';
import { defineModels, type Models } from '../../src/db/models.js';
import { hashSessionId, newHandle, newSessionId, type SessionRecord } from '../../src/sessions/session.js';
import { createTestDatabase } from '../support/postgres.js';

export const IDLE_MS = 60 * 60 * 1000;
export const ABSOLUTE_MS = 24 * 60 * 60 * 1000;

let nextUser = 1000;
export function newUserId() {
  return nextUser++;
}

export function makeRecord(overrides: Partial<SessionRecord> = {}, backend: BackendName = 'database'): SessionRecord {
  const now = Date.now();
  const id = newSessionId();
  const userId = overrides.userId ?? newUserId();
  return {
    id,
    idHash: hashSessionId(id),
    handle: newHandle(),
    userId,
    backend,
    data: { csrfToken: newHandle(), user: { id: userId, email: `u${userId}@example.com`, name: 'Ünïcode Üser', role: 'user' }, platformId: null },
    createdAt: now,
    issuedAt: now,
    lastActivity: now,
    expiresAt: now + IDLE_MS,
    absoluteExpiresAt: now + ABSOLUTE_MS,
    ip: '127.0.0.1',
    userAgent: 'conformance',
    version: 1,
    ...overrides,
  };
}

export interface TestDb {
  sequelize: Sequelize;
  models: Models;
  kind: 'sqlite' | 'postgres';
  close(): Promise<void>;
}

export async function sqliteDb(): Promise<TestDb> {
  const dir = mkdtempSync(path.join(tmpdir(), 'switchboard-store-'));
  const sequelize = await openDatabase(`sqlite:${path.join(dir, 'test.sqlite')}`);
  await migrateUp(sequelize);
  return {
    sequelize,
    models: defineModels(sequelize),
    kind: 'sqlite',
    async close() {
      await sequelize.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function postgresDb(): Promise<TestDb> {
  const db = await createTestDatabase('switchboard_store');
  const sequelize = await openDatabase(db.url);
  await migrateUp(sequelize);
  return {
    sequelize,
    models: defineModels(sequelize),
    kind: 'postgres',
    async close() {
      await sequelize.close();
      await db.drop();
    },
  };
}
