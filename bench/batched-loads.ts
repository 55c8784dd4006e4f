/**
 * DatabaseStore.load batched (one IN (…) statement for the loads that arrive together) against one
 * statement per load, at store level: 400 waves of 50 concurrent loads, each started from its own
 * macrotask as requests are, 6 interleaved rounds (the first unmeasured), medians.
 *
 *   node --import tsx bench/batched-loads.ts postgres     (or sqlite)
 *
 * Reports loads per second and this process's CPU per load (PostgreSQL's own CPU is not in it).
 */
import { DatabaseStore } from '../src/sessions/database-store.js';
import { hashSessionId } from '../src/sessions/session.js';
import { makeRecord, postgresDb, sqliteDb } from '../test/sessions/fixtures.js';

const kind = process.argv[2] ?? 'postgres';
const db = kind === 'postgres' ? await postgresDb() : await sqliteDb();
const store = new DatabaseStore(db.models);
const records = Array.from({ length: 200 }, () => makeRecord());
await Promise.all(records.map((r) => store.create(r)));
const sql = (store as unknown as { sql: { get(n: string, v: unknown[]): Promise<unknown> } }).sql;
const variants = {
  batched: (id: string) => store.load(id),
  single: (id: string) => sql.get('load1', [hashSessionId(id)]),
};
const waves = 400;
const results: Record<string, number[][]> = { batched: [], single: [] };
for (let round = 0; round < 6; round++) {
  for (const [name, load] of Object.entries(variants)) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let w = 0; w < waves; w++) {
      // Each load from its own macrotask, as requests arrive from their own sockets.
      await Promise.all(records.slice((w % 4) * 50, (w % 4) * 50 + 50).map((r) => new Promise((res) => setImmediate(() => res(load(r.id))))));
    }
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    if (round > 0) results[name]!.push([(waves * 50) / (ms / 1000), (cpu.user + cpu.system) / (waves * 50)]);
  }
}
for (const [name, rs] of Object.entries(results)) {
  const med = (i: number) => rs.map((r) => r[i]!).sort((a, b) => a - b)[Math.floor(rs.length / 2)]!;
  console.log(`${kind} ${name}: ${Math.round(med(0))} loads/s, ${med(1).toFixed(1)} µs CPU (this process) per load`);
}
await store.close();
await db.close();
