/**
 * `npm run sessions:cleanup -- [--batch 500] [--keep-events-days 90]`: deletes expired
 * sessions from the database, revocation entries that can no longer match a live session, and
 * audit rows (session_events) older than the retention. Works in small batches, each its own
 * short statement, so SQLite's writer lock is never held long and requests go on meanwhile; the
 * cost is proportional to what expired. (Redis expires its own keys.)
 */
import { openCore } from '../src/core.js';
import { databaseNow } from '../src/db/database.js';
import { deleteEventsBefore } from '../src/sessions/audit.js';
import { onInterrupt, scriptConfig, scriptLogger, scriptOptions, stopOnFailure } from './cli.js';

const DAY_MS = 86_400_000;
/** Clocks apart by more than this are said to be. */
const CLOCK_TOLERANCE_MS = 5_000;
const USAGE = 'Delete expired sessions, stale revocation entries and old audit rows.\n\n  npm run sessions:cleanup -- [--batch N] [--keep-events-days DAYS (default 90; 0 keeps them all)]';
const values = scriptOptions(
  { batch: { type: 'string', default: '500' }, 'keep-events-days': { type: 'string', default: '90' }, help: { type: 'boolean', default: false } },
  USAGE,
);
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
// The pattern alone decides: whatever passes it is a whole number of at least 1.
if (!/^[1-9][0-9]*$/.test(values.batch)) {
  console.error(`--batch must be a positive whole number (got "${values.batch}")\n\n${USAGE}`);
  process.exit(2);
}
const batch = Number(values.batch);
const keepEventsDays = /^[0-9]{1,6}$/.test(values['keep-events-days']) ? Number(values['keep-events-days']) : NaN;
if (!Number.isInteger(keepEventsDays)) {
  console.error(`--keep-events-days must be a whole number of days, 0 to keep every audit row (got "${values['keep-events-days']}")\n\n${USAGE}`);
  process.exit(2);
}
/** Yields between batches so that a server sharing this SQLite file gets the writer lock. */
const pause = () => new Promise((r) => setTimeout(r, 5));
stopOnFailure('sessions:cleanup');
const config = scriptConfig();
const core = await openCore(config, scriptLogger(config), { migrate: false });
let sessions = 0;
let recorded = false;
/** The audit trail's row for the sessions deleted, once, however the run ends. */
const record = async () => {
  if (recorded || sessions === 0) return;
  recorded = true;
  await core.models.SessionEvent.create({ type: 'expired', userId: null, handle: null, backend: 'database', actor: 'system', reason: 'cleanup', count: sessions, ip: null, userAgent: null });
};
let interrupted = false;
let inFlight: Promise<unknown> = Promise.resolve();
/** One batch; once interrupted, none starts (the exit is on its way), and the one under way is waited for. */
function batchOf<T>(work: () => Promise<T>): Promise<T> {
  if (interrupted) return new Promise<never>(() => undefined);
  const running = work();
  inFlight = running.catch(() => undefined);
  return running;
}
onInterrupt(async () => {
  interrupted = true;
  await inFlight;
  console.error(`sessions:cleanup: interrupted after deleting ${sessions} expired sessions; run it again for the rest`);
  await record();
});
try {
  // Expired by the earlier of this machine's clock and the database's: run from a machine whose
  // clock was fast, the cleanup deleted live sessions (and revocations still needed).
  const [here, there] = [Date.now(), await databaseNow(core.sequelize)];
  const now = Math.min(here, there);
  if (here - there > CLOCK_TOLERANCE_MS) console.error(`sessions:cleanup: this machine's clock is ${Math.round((here - there) / 1000)} s ahead of the database's; the database's is used`);
  // Counted as each batch ends, so that an interruption records what was deleted.
  const deleteSessions = async () => {
    const n = await core.raw.database.deleteExpired(batch, now);
    sessions += n;
    return n;
  };
  while ((await batchOf(deleteSessions)) > 0) await pause();
  const revocations = await core.revocations.prune(now);
  let events = 0;
  const before = new Date(now - keepEventsDays * DAY_MS);
  if (keepEventsDays > 0) {
    for (let n = await batchOf(() => deleteEventsBefore(core.models, before, batch)); n > 0; n = await batchOf(() => deleteEventsBefore(core.models, before, batch))) {
      events += n;
      await pause();
    }
  }
  await record();
  const kept = keepEventsDays > 0 ? `older than ${keepEventsDays} days` : '(all kept: --keep-events-days 0)';
  console.log(`deleted ${sessions} expired sessions, ${revocations} stale revocation entries and ${events} audit rows ${kept}`);
} finally {
  await core.close();
}
