/**
 * The session layer without HTTP: database (migrated), metrics, the revocation list, the
 * override, the rollback guard and the three backends composed. The server (app.ts) and the
 * operator scripts (scripts/) both start from here.
 */
import { performance } from 'node:perf_hooks';
import type { Sequelize } from 'sequelize';
import type { Logger } from 'pino';
import type { Cluster, Redis } from 'ioredis';
import { BACKENDS, ConfigError, type Config } from './config/config.js';
import { databaseNow, openDatabase } from './db/database.js';
import { deploymentId, noteSigningRelease, SIGNING_RELEASE_NOTE_MS, unboundCookiesBefore, unsignedIdsBefore } from './db/deployment.js';
import { migrateUp, pendingMigrations, SchemaBehindError } from './db/migrator.js';
import { defineModels, type Models } from './db/models.js';
import { FlagOverride } from './flags/override.js';
import { RollbackGuard } from './flags/rollback.js';
import { RepeatedWarning } from './logging/repeated-warning.js';
import { Metrics } from './metrics/metrics.js';
import { SessionBackends } from './sessions/backends.js';
import { SessionCookieValue } from './sessions/session-cookie-value.js';
import { jsonCodec, sealedCodec } from './sessions/codec.js';
import { CookieStore } from './sessions/cookie-store.js';
import { DatabaseStore } from './sessions/database-store.js';
import { GuardedStore, type StoreObserver } from './sessions/guarded-store.js';
import { MirroredStore } from './sessions/mirrored-store.js';
import { createRedisClient, isMaxClients, missingDatabase, waitForRedis } from './sessions/redis-client.js';
import { RedisStore } from './sessions/redis-store.js';
import { InstanceChannel } from './sessions/instance-channel.js';
import { RevocationSpool } from './sessions/revocation-spool.js';
import { RevocationList } from './sessions/revocations.js';
import { DisabledStore } from './sessions/disabled-store.js';
import type { SessionStore } from './sessions/store.js';

/** How often every backend is pinged for `session_store_up` (and, while a breaker is open, probed). */
const HEALTH_PROBE_MS = 5000;

export interface Core {
  sequelize: Sequelize;
  models: Models;
  metrics: Metrics;
  revocations: RevocationList;
  override: FlagOverride;
  rollback: RollbackGuard;
  backends: SessionBackends;
  /**
   * The bare stores, for operator tools that work below the compositions; `redis` is undefined
   * when the redis backend is switched off (REDIS_URL=none).
   */
  raw: { database: DatabaseStore; redis?: RedisStore };
  redis?: Redis | Cluster;
  /** The instances sharing this database (db/deployment.ts): what else is sealed is bound to it too. */
  deployment: string;
  close(): Promise<void>;
}

/**
 * `migrate: false` (the operator scripts): a database whose schema is behind this release is
 * refused, not brought up to date, so that a cron job from a newer checkout neither undoes an
 * operator's `migrate:down` nor puts the schema into whatever database a mistyped
 * DATABASE_URL names. The server applies pending migrations as it starts.
 */
export async function openCore(config: Config, logger: Logger, { migrate = true } = {}): Promise<Core> {
  const sequelize = await openDatabase(config.databaseUrl);
  if (migrate) {
    const applied = await migrateUp(sequelize);
    if (applied.length) logger.info({ migrations: applied }, 'applied migrations');
  } else {
    const pending = await pendingMigrations(sequelize);
    if (pending.length) {
      await sequelize.close();
      throw new SchemaBehindError(pending);
    }
  }
  const models = defineModels(sequelize);
  const metrics = new Metrics({ disabledBackends: config.redis.enabled ? [] : ['redis'] });
  // Every SYNC_INTERVAL_MS while the database is down: a line per 10 s, counting the rest.
  const syncError = (what: string) => {
    const failed = new RepeatedWarning(logger, `${what} sync failed`);
    return (err: unknown) => failed.warn({ err });
  };

  const revocationSyncError = syncError('revocation');
  // Clocks apart change what a revocation means (README, "Clocks"): said, once in a while.
  const clockAhead = new RepeatedWarning(logger, 'clocks disagree: a revocation was dated ahead of the database’s clock or of this instance’s; it is dated by the earlier one');
  const revocations = new RevocationList(models, {
    absoluteTimeoutMs: config.sessions.absoluteTimeoutMs,
    syncIntervalMs: config.syncIntervalMs,
    onSyncError: revocationSyncError,
    onClockAhead: (aheadMs) => clockAhead.warn({ event: 'clock_disagreement', aheadSeconds: Math.round(aheadMs / 1000) }),
    onClockStep: (stepMs) => logger.warn({ event: 'clock_step', stepSeconds: Math.round(stepMs / 1000) }, 'the system clock stepped: every live revocation read again'),
    sharedClock: () => databaseNow(sequelize),
  });
  await revocations.start();
  const rollbackNotShared = new RepeatedWarning(logger, 'automatic rollback not shared with the other instances (they follow it once it is)');
  const rollback = new RollbackGuard({ ...config.rollback, fallback: config.sessions.fallback }, (state) => {
    metrics.rollbacks.inc({ from: state.from, to: state.to, trigger: state.trigger });
    logger.error({ event: 'rollback', ...state }, `automatic rollback: sessions go back from ${state.from} to ${state.to} (${state.trigger})`);
    // Under the operator change in force now: one made meanwhile voids it (FlagOverride.shareRollback).
    const basedOn = override.epoch;
    const share = () =>
      override.shareRollback(state, basedOn).catch((err: unknown) => {
        rollbackNotShared.warn({ err });
        // Until it is stored, instances that did not hear the announcement (or start later)
        // keep sending these sessions the other way.
        if (rollback.state === state) setTimeout(share, config.syncIntervalMs).unref();
      });
    void share();
  });
  // An operator setting or clearing the override, on any instance, ends an automatic rollback;
  // one instance's rollback is followed by all.
  const override = new FlagOverride(models, {
    syncIntervalMs: config.syncIntervalMs,
    onSyncError: syncError('flag override'),
    onOperatorChange: () => rollback.clear(),
    onRollback: (state) => {
      if (rollback.follow(state)) logger.warn({ event: 'rollback_followed', ...state }, `following an automatic rollback decided by an instance sharing this database: sessions go back from ${state.from} to ${state.to} (${state.trigger})`);
    },
  });
  await override.start();
  const rollbackTimer = setInterval(() => rollback.evaluate(), 1000);
  rollbackTimer.unref();

  /** Secondary writes that failed, by what failed (`evict from redis`, `give back the directory entry`…). */
  const secondaryFailed = new Map<string, RepeatedWarning>();
  const observer = storeObserver(logger, metrics, rollback);

  const codec = config.sessions.encryptAtRest ? sealedCodec(config.sessions.secrets) : jsonCodec;
  const { redis, maxClients } = await connectRedis(config, logger);
  // Named for this deployment (the instances sharing this database) alone: see db/deployment.ts.
  const deployment = await deploymentId(models);
  const shared = redis ? `${config.redis.keyPrefix}${deployment}:` : '';
  const channelFailed = new RepeatedWarning(logger, 'instance channel error');
  // Its own connection refused: instances hear each other's logouts and overrides only by the poll.
  const channel = redis && new InstanceChannel(redis, shared, (err) => channelFailed.warn({ err }), (err, connection) =>
    maxClients('instance channel (subscriber)', err, connection),
  );
  if (redis && channel) {
    // Not waited for: start-up does not wait on Redis, which may be down; until the channel is
    // subscribed, the poll brings other instances' changes.
    void revocations.announceOn(channel);
    void override.announceOn(channel);
    // Revocations made while the database was down wait in Redis (revocation-spool.ts); they
    // hold from the first request on.
    revocations.holdIn(new RevocationSpool(redis, `${shared}revocations:held`));
    await revocations.sync().catch(revocationSyncError);
  }

  const database = new DatabaseStore(models, codec);
  // No Redis per-user index: the app lists a user's sessions from the database directory (every
  // Redis session has its row there, see mirrored-store.ts), so the index would only cost a
  // command per login and 136 B per session.
  const redisStore = redis && new RedisStore(redis, { keyPrefix: config.redis.keyPrefix, absoluteTimeoutMs: config.sessions.absoluteTimeoutMs, codec, userIndex: false });
  // Counted as the database's operations too, failures and successes alike (so that its error
  // ratio has them on both sides): no request sees a write-behind copy fail, and an operator
  // must (SessionStoreErrorRatioHigh, session_store_operations_total). Not timed: a batch of
  // copies is no request's wait, and would only blur the database's latency.
  const copyOperation = (operation: string) => (operation === 'read-through' ? 'load' : operation === 'destroy' ? 'destroy' : 'save');
  const copyFailed = new RepeatedWarning(logger, 'database copy of a session could not be written');
  const mirrorError = (err: unknown, operation: string) => {
    metrics.storeOutcome('database', copyOperation(operation), 'error');
    copyFailed.warn({ err, operation });
  };
  const onCopied = (operation: string) => metrics.storeOutcome('database', copyOperation(operation), 'success');
  // Not through copyFailed: at a stop the last failure has just been logged, and this line would
  // be one of those it leaves out.
  const copies = {
    onCaughtUp: (sessions: number) => logger.info({ sessions }, 'database copies written again after failing'),
    onClosedBehind: (sessions: number) => logger.warn({ sessions }, "sessions' latest changes are not in their database copy at shutdown"),
  };
  // The short deadline exists to fail over fast; the backend that is itself the last resort
  // (the fallback, or every backend with SESSION_FALLBACK=none) has nothing to fail over to.
  const fallback = config.sessions.fallback;
  const guardOptions = (store: SessionStore) => {
    const lastResort = fallback === 'none' || fallback === store.backend;
    return { ...config.stores, timeoutMs: lastResort ? config.stores.lastResortTimeoutMs : config.stores.timeoutMs };
  };
  const guard = (store: SessionStore) => new GuardedStore(store, guardOptions(store), observer);
  const stores: SessionBackends['stores'] = {
    // The sessions table asked outside the guard (SessionBackends.directory) has nothing to fail
    // over to, whatever the fallback: it waits as the last resort does.
    database: new GuardedStore(database, { ...guardOptions(database), outsideTimeoutMs: Math.max(config.stores.timeoutMs, config.stores.lastResortTimeoutMs) }, observer),
    redis: redisStore ? new MirroredStore(guard(redisStore), database, mirrorError, { readThrough: true, flushMs: config.sessions.mirrorFlushMs, onCopied, ...copies }) : new DisabledStore('redis'),
    cookie: new MirroredStore(guard(new CookieStore(config.sessions.secrets, revocations, deployment, await unboundCookiesBefore(models))), database, mirrorError, { flushMs: config.sessions.mirrorFlushMs, onCopied, ...copies }),
  };
  const backends = new SessionBackends(stores, database, revocations, config.sessions.fallback, {
    fallback(from, to, reason) {
      metrics.fallbacks.inc({ from, to, reason });
      rollback.noteFallback(from);
    },
    migrated(from, to, cause) {
      metrics.migrations.inc({ from, to });
      // Only a flag decision puts a backend on probation; failing over is not a rollout.
      if (cause === 'flag') rollback.noteMigration(from, to);
    },
    secondaryFailure(err, what) {
      // One line per kind per interval: during an outage every logout has one.
      let warning = secondaryFailed.get(what);
      if (!warning) secondaryFailed.set(what, (warning = new RepeatedWarning(logger, 'secondary session write failed')));
      warning.warn({ err, what });
    },
  }, new SessionCookieValue(config.sessions.secrets, await unsignedIdsBefore(models)));

  // session_store_up also between requests and without /readyz: the database under the redis or
  // cookie backend takes only write-behind copies, whose failures no request sees.
  const healthTimer = setInterval(() => {
    void backends.health().then((health) => metrics.storeHealth(health));
  }, HEALTH_PROBE_MS);
  healthTimer.unref();
  // A missed note (the database down) only makes a later start look harder for an older release's sessions.
  const releaseNoteTimer = setInterval(() => void noteSigningRelease(models).catch(() => undefined), SIGNING_RELEASE_NOTE_MS);
  releaseNoteTimer.unref();

  return {
    sequelize,
    models,
    metrics,
    revocations,
    override,
    rollback,
    backends,
    raw: { database, redis: redisStore },
    redis,
    deployment,
    async close() {
      clearInterval(rollbackTimer);
      clearInterval(healthTimer);
      clearInterval(releaseNoteTimer);
      // Pending database copies are written before the connection closes.
      await Promise.all([stores.redis.close(), stores.cookie.close()]);
      await Promise.all([revocations.stop(), override.stop()]);
      channel?.close();
      redis?.disconnect();
      await sequelize.close();
    },
  };
}

/**
 * What the stores' guards report, turned into metrics, the rollback's samples and log lines.
 * What a failing backend says is the operator's first clue (Redis: "OOM command not allowed",
 * "READONLY"), and no other line carries it: the message only, as a client's error object can
 * hold the command's arguments, which are session records.
 */
function storeObserver(logger: Logger, metrics: Metrics, rollback: RollbackGuard): StoreObserver {
  const availability = new Map<string, boolean>();
  const operationFailed = new Map(BACKENDS.map((b) => [b, new RepeatedWarning(logger, `session backend ${b} failed an operation`)]));
  return {
    operation(backend, operation, outcome, seconds, err) {
      metrics.storeOperation(backend, operation, outcome, seconds);
      rollback.record(backend, outcome === 'success', seconds);
      if (outcome === 'error') operationFailed.get(backend)?.warn({ event: 'store_error', backend, operation, error: err instanceof Error ? err.message : String(err) });
    },
    outside(backend, operation, outcome) {
      metrics.storeOutcome(backend, operation, outcome);
    },
    probeFailed(backend, err) {
      operationFailed.get(backend)?.warn({ event: 'store_error', backend, operation: 'probe', error: err instanceof Error ? err.message : String(err) });
    },
    availability(backend, up) {
      metrics.storeUp.set({ backend }, up ? 1 : 0);
      if (up) rollback.forget(backend);
      // Logged when it changes: while a backend stays down, each failed probe opens the breaker
      // again (every BREAKER_HALF_OPEN_AFTER_MS), which is no news.
      if (availability.get(backend) === up) return;
      availability.set(backend, up);
      logger[up ? 'info' : 'warn']({ event: 'backend_availability', backend, up }, `session backend ${backend} ${up ? 'recovered' : 'unavailable: circuit open'}`);
    },
  };
}

/**
 * The Redis client (undefined with REDIS_URL=none), its connection errors logged one line a
 * minute, and `maxClients` to name a connection Redis refuses at its maxclients. Start-up waits
 * a second for Redis, which may be down and come later; one that answers and has no such
 * database will not, and stops start-up.
 */
async function connectRedis(config: Config, logger: Logger) {
  const redis = config.redis.enabled ? createRedisClient(config.redis) : undefined;
  let lastRedisError = -Infinity;
  // Until start-up has checked Redis, a missing database is start-up's to report: it stops there.
  let reportedMissing = true;
  // The setting through which Redis is found: with Sentinels or a Cluster, REDIS_URL's host is not used.
  const redisVariable = config.redis.cluster?.length ? 'REDIS_CLUSTER_NODES' : config.redis.sentinels?.length ? 'REDIS_SENTINELS' : 'REDIS_URL';
  // Redis at `maxclients` refuses each new connection (and each reconnect) with this reply: named
  // once per connection until it connects again, beside the one-a-minute connection errors.
  const maxClientsTold = new Set<string>();
  const maxClients = (connection: string, err: Error, client: Redis | Cluster) => {
    if (!isMaxClients(err) || maxClientsTold.has(connection)) return;
    maxClientsTold.add(connection);
    client.once('ready', () => maxClientsTold.delete(connection));
    logger.error({ event: 'redis_maxclients', connection, err: err.message, variable: redisVariable }, `Redis refuses the ${connection} connection: ERR max number of clients reached (its maxclients); raise maxclients or find what holds its connections (redis-cli INFO clients)`);
  };
  redis?.on('error', (err: Error) => {
    maxClients('main', err, redis);
    const missing = missingDatabase(redis);
    if (missing) {
      // A configuration problem, not an outage: said once, whatever else was said this minute.
      if (!reportedMissing) logger.error({ event: 'redis_database_missing', err: err.message }, `REDIS_URL: ${missing.message}; the redis backend stays down`);
      reportedMissing = true;
      return;
    }
    // ioredis reports every failed reconnect; one line a minute is enough (a minute after the
    // last line, not after the last error: errors come every second while Redis refuses us).
    // Timed on the monotonic clock, which a system clock stepped back does not move.
    if (performance.now() - lastRedisError <= 60_000) return;
    logger.warn({ err: err.message, variable: redisVariable }, 'redis connection error');
    lastRedisError = performance.now();
  });
  if (redis) {
    await waitForRedis(redis, 1000);
    // A Redis that is down may come later; one that answers and has no such database will not.
    const missing = missingDatabase(redis);
    if (missing) {
      redis.disconnect();
      throw new ConfigError(`REDIS_URL: ${missing.message}; name a database this Redis has (0–15 by default) and its user may select`);
    }
    reportedMissing = false;
  }
  return { redis, maxClients };
}
