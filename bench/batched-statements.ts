/**
 * DatabaseStore's batched statements against one statement per call, at store level: loads (one
 * IN (…) statement for the loads that arrive together) and saves (one UPDATE … FROM (VALUES …)
 * for the saves that arrive together). 400 waves of 50 concurrent calls, each started from its
 * own macrotask as requests are, 6 interleaved rounds (the first unmeasured), medians.
 *
 *   node --import tsx bench/batched-statements.ts postgres     (or sqlite)
 *
 * Reports calls per second and this process's CPU per call (PostgreSQL's own CPU is not in it).
 * "single" runs the one-row form of the same statement per call, as the store did before it
 * batched (a save's plain UPDATE then differed only in its spelling).
 */
import { DatabaseStore } from '../src/sessions/database-store.js';
import { hashSessionId, type SessionRecord } from '../src/sessions/session.js';
import { makeRecord, postgresDb, sqliteDb } from '../test/sessions/fixtures.js';

const kind = process.argv[2] ?? 'postgres';
const db = kind === 'postgres' ? await postgresDb() : await sqliteDb();
const store = new DatabaseStore(db.models);
const records = Array.from({ length: 200 }, () => makeRecord());
await Promise.all(records.map((r) => store.create(r)));
const internals = store as unknown as { sql: { all(n: string, v: unknown[]): Promise<unknown[]> }; rowValues(r: SessionRecord): unknown[] };

// Each save moves its session one version on, whichever variant makes it.
const versions = new Map(records.map((r) => [r.id, r.version]));
const nextSave = (r: SessionRecord) => {
  const read = versions.get(r.id)!;
  versions.set(r.id, read + 1);
  return { record: { ...r, version: read + 1, lastActivity: Date.now() }, read };
};
const variants: Record<string, (r: SessionRecord) => Promise<unknown>> = {
  'load, batched': (r) => store.load(r.id),
  'load, single': (r) => internals.sql.all('load1', [hashSessionId(r.id)]),
  'save, batched': async (r) => {
    const { record, read } = nextSave(r);
    if ((await store.save(record, read)) !== r.id) throw new Error('save not written');
  },
  'save, single': async (r) => {
    const { record, read } = nextSave(r);
    if ((await internals.sql.all('saveRows1', [...internals.rowValues(record), read])).length !== 1) throw new Error('save not written');
  },
};
const waves = 400;
const results: Record<string, number[][]> = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
for (let round = 0; round < 6; round++) {
  for (const [name, call] of Object.entries(variants)) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let w = 0; w < waves; w++) {
      // Each call from its own macrotask, as requests arrive from their own sockets.
      await Promise.all(records.slice((w % 4) * 50, (w % 4) * 50 + 50).map((r) => new Promise((res, rej) => setImmediate(() => call(r).then(res, rej)))));
    }
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    if (round > 0) results[name]!.push([(waves * 50) / (ms / 1000), (cpu.user + cpu.system) / (waves * 50)]);
  }
}
for (const [name, rs] of Object.entries(results)) {
  const med = (i: number) => rs.map((r) => r[i]!).sort((a, b) => a - b)[Math.floor(rs.length / 2)]!;
  console.log(`${kind} ${name}: ${Math.round(med(0))} calls/s, ${med(1).toFixed(1)} µs CPU (this process) per call`);
}
await store.close();
await db.close();
