/**
 * What the database copy of a Redis write costs per row, on SQLite: the mirror's flush
 * (`DatabaseStore.upsertMany`) of 200 rows at a time, in two patterns:
 *   hot   — the same 200 sessions every flush (the bench's pattern: few, very busy sessions);
 *   spread — 200 different sessions every flush (production: each write copied once).
 * Process CPU (all threads) per row copied. Run pinned to one core:
 *   taskset -c 0 node --import tsx bench/prototypes/mirror-row-cost.ts
 * On PostgreSQL only this process's side is counted (the server's work is its own process's).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { migrateUp } from '../../src/db/migrator.js';
import { defineModels } from '../../src/db/models.js';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { hashSessionId, newHandle, newSessionId, type SessionRecord } from '../../src/sessions/session.js';

const SESSIONS = Number(process.env.SESSIONS ?? 20_000);
const BATCH = 200;
const UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';

function record(i: number): SessionRecord {
  const now = Date.now();
  const id = newSessionId();
  return {
    id, idHash: hashSessionId(id), handle: newHandle(), userId: i + 1, backend: 'redis',
    data: { csrfToken: newHandle(), user: { id: i + 1, email: `bench-user-${i}@example.com`, name: `Bench User ${i}`, role: 'user' }, platformId: null, preferences: { counter: 1 } },
    createdAt: now, issuedAt: now, lastActivity: now, expiresAt: now + 7_200_000, absoluteExpiresAt: now + 86_400_000,
    ip: '127.0.0.1', userAgent: UA, version: 1,
  };
}

const dir = mkdtempSync(path.join(tmpdir(), 'mirror-cost-'));
// DATABASE_URL=postgres://… measures this process's side of the copy on PostgreSQL (use a scratch database).
const sequelize = await openDatabase(process.env.DATABASE_URL ?? `sqlite:${path.join(dir, 'db.sqlite')}`);
for (const pragma of (process.env.PRAGMAS ?? '').split(';').filter(Boolean)) await sequelize.query(`PRAGMA ${pragma}`);
await migrateUp(sequelize);
const store = new DatabaseStore(defineModels(sequelize));
const records = Array.from({ length: SESSIONS }, (_, i) => record(i));
for (let i = 0; i < records.length; i += BATCH) await store.upsertMany(records.slice(i, i + BATCH));

async function measure(label: string, pick: (flush: number) => SessionRecord[], flushes: number) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let f = 0; f < flushes; f++) {
    const batch = pick(f).map((r) => ({ ...r, version: r.version + 1 + f, lastActivity: Date.now(), data: { ...r.data, preferences: { counter: f } } }));
    await store.upsertMany(batch);
  }
  const cpu = process.cpuUsage(cpu0);
  const rows = flushes * BATCH;
  console.log(`${label}: ${rows} rows, ${((cpu.user + cpu.system) / rows).toFixed(1)} µs CPU per row (user ${(cpu.user / rows).toFixed(1)}, system ${(cpu.system / rows).toFixed(1)}), wall ${(Number(process.hrtime.bigint() - t0) / 1e3 / rows).toFixed(1)} µs per row`);
}

const flushes = SESSIONS / BATCH;
for (let round = 0; round < 3; round++) {
  await measure('hot   ', () => records.slice(0, BATCH), flushes);
  await measure('spread', (f) => records.slice(f * BATCH, (f + 1) * BATCH), flushes);
}
await sequelize.close();
rmSync(dir, { recursive: true, force: true });
