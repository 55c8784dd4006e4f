/**
 * `npm run sessions:cleanup [-- --batch 500]`: deletes expired sessions from the database
 * and revocation entries that can no longer match a live session. Works in small batches,
 * each its own short statement, so SQLite's writer lock is never held long and requests go
 * on meanwhile; the cost is proportional to what expired. (Redis expires its own keys.)
 */
import { openCore } from '../src/core.js';
import { scriptConfig, scriptLogger, scriptOptions, stopOnFailure } from './cli.js';

const USAGE = 'Delete expired sessions and stale revocation entries.\n\n  npm run sessions:cleanup [-- --batch N]';
const values = scriptOptions({ batch: { type: 'string', default: '500' }, help: { type: 'boolean', default: false } }, USAGE);
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const batch = /^[1-9][0-9]*$/.test(values.batch) ? Number(values.batch) : NaN;
if (!Number.isInteger(batch) || batch < 1) {
  console.error('--batch must be a positive whole number');
  process.exit(2);
}
stopOnFailure('sessions:cleanup');
const config = scriptConfig();
const core = await openCore(config, scriptLogger(config));
try {
  let sessions = 0;
  for (let n = await core.raw.database.deleteExpired(batch); n > 0; n = await core.raw.database.deleteExpired(batch)) {
    sessions += n;
    // Yield between batches so a server sharing this SQLite file gets the writer lock.
    await new Promise((r) => setTimeout(r, 5));
  }
  const revocations = await core.revocations.prune();
  if (sessions > 0) await core.models.SessionEvent.create({ type: 'expired', userId: null, handle: null, backend: 'database', actor: 'system', reason: 'cleanup', count: sessions, ip: null, userAgent: null });
  console.log(`deleted ${sessions} expired sessions and ${revocations} stale revocation entries`);
} finally {
  await core.close();
}
