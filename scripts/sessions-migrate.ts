/**
 * `npm run sessions:migrate -- --from redis --to database [--dry-run] [--batch 500] [--restart]`
 *
 * Moves every session held by one server-side backend into the other, with a progress bar.
 * Resumable: the position is saved in DATA_DIR after each batch, and a rerun continues from it
 * (`--restart` starts over). Safe to run while the server serves: a session is written to the
 * destination before it is removed from the source, and the flag should already point at the
 * destination (otherwise traffic moves sessions back).
 */
import { SingleBar, Presets } from 'cli-progress';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeDirectory } from '../src/config/make-directory.js';
import { openCore } from '../src/core.js';
import { bulkMigrate, type ServerSideBackend } from '../src/sessions/bulk-migrate.js';
import { onInterrupt, oneCopyAtATime, scriptConfig, scriptLogger, scriptOptions, stopOnFailure } from './cli.js';

const HELP = `Move sessions in bulk between server-side backends.

  npm run sessions:migrate -- --from <database|redis> --to <database|redis> [options]

  --dry-run     count what would move; change nothing
  --batch N     sessions per batch (default 500)
  --restart     ignore a saved position and start from the beginning
  --help        this text

One copy per direction runs at a time: another started meanwhile stops at once (exit 75).
Cookie-held sessions live in browsers and move on their next request.`;

const values = scriptOptions(
  {
    from: { type: 'string' },
    to: { type: 'string' },
    'dry-run': { type: 'boolean', default: false },
    batch: { type: 'string', default: '500' },
    restart: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
  HELP,
);
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
const serverSide = (v: string | undefined): v is ServerSideBackend => v === 'database' || v === 'redis';
const batchSize = /^[1-9][0-9]*$/.test(values.batch) ? Number(values.batch) : NaN;
const backendProblem = (option: string, v: string | undefined) =>
  v === undefined ? `${option} is required` : v === 'cookie' ? `${option} cookie: cookie sessions live in browsers and move on their next request` : !serverSide(v) ? `${option} must be database or redis (got ${JSON.stringify(v)})` : undefined;
const problem =
  backendProblem('--from', values.from) ??
  backendProblem('--to', values.to) ??
  (values.from === values.to ? '--from and --to must differ' : !Number.isInteger(batchSize) || batchSize < 1 ? '--batch must be a positive whole number' : undefined);
if (problem || !serverSide(values.from) || !serverSide(values.to)) {
  console.error(`${problem}\n\n${HELP}`);
  process.exit(2);
}
stopOnFailure('sessions:migrate');

const configured = scriptConfig();
const cursorFile = path.join(configured.dataDir, `sessions-migrate-${values.from}-to-${values.to}.cursor`);
// One copy per direction: a second would resume from the first's position as it moves. Refused
// before anything is opened; a dry run writes no position and takes no lock.
if (!values['dry-run']) {
  makeDirectory(configured.dataDir);
  await oneCopyAtATime(`sessions:migrate --from ${values.from} --to ${values.to}`, cursorFile);
}
// No request waits on a move here, and one late answer (a busy Redis, a scheduling hiccup) would
// stop the run: every store gets the last resort's deadline (LAST_RESORT_TIMEOUT_MS), not the
// short one that exists to fail a request over fast.
const config = { ...configured, stores: { ...configured.stores, timeoutMs: configured.stores.lastResortTimeoutMs } };
const core = await openCore(config, scriptLogger(config), { migrate: false });
const redisStore = core.raw.redis;
if (!redisStore) {
  console.error('the redis backend is switched off (REDIS_URL=none): nothing to move');
  await core.close();
  process.exit(2);
}
// Both ends are needed: an unreachable Redis is named as such, before anything is counted.
await core.redis?.ping().catch((err: unknown) => {
  // ioredis's own words for a connection that never came up ("Stream isn't writeable…") say
  // nothing about where; the address does (never the password).
  const url = new URL(config.redis.url);
  const why = core.redis?.status === 'ready' ? (err instanceof Error ? err.message : String(err)) : 'no connection';
  // With Sentinels or a Cluster, REDIS_URL's host is not where Redis is looked for.
  const { cluster, sentinels, sentinelName } = config.redis;
  if (cluster?.length) throw new Error(`REDIS_CLUSTER_NODES: cannot reach the Redis Cluster at ${cluster.map((n) => `${n.host}:${n.port}`).join(',')} (${why})`);
  if (sentinels?.length) throw new Error(`REDIS_SENTINELS: cannot reach the master "${sentinelName}" through ${sentinels.map((n) => `${n.host}:${n.port}`).join(',')} (${why})`);
  throw new Error(`REDIS_URL: cannot reach Redis at ${url.host} (${why})`);
});
const cursor = values.restart ? '' : savedPosition();
// The bar hides the terminal's cursor while it draws: stopped however the run ends, or the
// operator's terminal is left without one.
const bar = new SingleBar({ format: ' {bar} {value}/{total} sessions | {eta_formatted} left', hideCursor: true }, Presets.shades_classic);
let done = 0;
onInterrupt(() => {
  bar.stop();
  console.error(`sessions:migrate: interrupted after ${done} sessions in this run; run it again to resume${values['dry-run'] ? '' : ' from there'}`);
});
try {
  const total = await core.raw.database.countHeldBy(values.from);
  // Unexpired, as the directory knows them: revoked ones among them are removed, not moved.
  console.log(`${values['dry-run'] ? '[dry run] ' : ''}${total} unexpired sessions held by ${values.from}${cursor ? ' (resuming)' : ''}`);
  bar.start(total, 0);
  const result = await bulkMigrate(core.backends, { database: core.raw.database, redis: redisStore }, {
    from: values.from,
    to: values.to,
    batchSize,
    dryRun: values['dry-run'],
    cursor,
    onBatch: ({ moved, skipped, cursor: position }) => {
      done = moved + skipped;
      bar.update(done);
      if (!values['dry-run']) {
        makeDirectory(config.dataDir);
        // Written beside it, then renamed over it: a crash mid-write leaves the last position, not an empty file.
        writeFileSync(`${cursorFile}.tmp`, JSON.stringify({ deployment: core.deployment, position }));
        renameSync(`${cursorFile}.tmp`, cursorFile);
      }
    },
  });
  bar.stop();
  if (!values['dry-run']) rmSync(cursorFile, { force: true });
  console.log(`${values['dry-run'] ? 'would move' : 'moved'} ${result.moved} sessions from ${values.from} to ${values.to}; ${result.skipped} revoked ones ${values['dry-run'] ? 'would be removed' : 'removed'}`);
} finally {
  bar.stop();
  await core.close();
}

/**
 * Where the last run in this direction stopped, if it ran on this database (its deployment id):
 * the file is named by direction only, and DATA_DIR may serve another DATABASE_URL (staging and a
 * test copy on one host). Taken from another database, the position skipped every session before
 * it: those stayed in the source of a run that said it had finished. A position of an older
 * release (the bare position, no database) is not used either: a run from the start moves the same.
 */
function savedPosition(): string {
  if (!existsSync(cursorFile)) return '';
  try {
    const saved = JSON.parse(readFileSync(cursorFile, 'utf8')) as { deployment?: unknown; position?: unknown };
    if (saved.deployment === core.deployment && typeof saved.position === 'string') return saved.position;
  } catch {
    // not ours to read
  }
  console.log(`(a saved position not of this database is ignored: starting from the beginning)`);
  return '';
}
