/**
 * Builds Switchboard from a validated Config: the database, the three session backends and
 * their compositions, the flag, metrics, and the Koa middleware in the order requests meet them.
 */
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { LoginLimiter } from './auth/login-limiter.js';
import { BACKENDS, type BackendName, type Config } from './config/config.js';
import { openDatabase } from './db/database.js';
import { migrateUp } from './db/migrator.js';
import { defineModels } from './db/models.js';
import { BackendFlag } from './flags/backend-flag.js';
import { FlagOverride } from './flags/override.js';
import { RollbackGuard } from './flags/rollback.js';
import { UnleashBackendFlag } from './flags/unleash-flag.js';
import type { AppDeps } from './http/deps.js';
import { errorHandler } from './http/error-handler.js';
import { NotFoundError } from './http/errors.js';
import { csrfProtection } from './http/csrf.js';
import { requestMetrics } from './http/request-metrics.js';
import { securityHeaders } from './http/security-headers.js';
import { sessionMiddleware } from './http/session-middleware.js';
import { adminRoutes } from './http/routes/admin.js';
import { authRoutes } from './http/routes/auth.js';
import { operationsRoutes } from './http/routes/operations.js';
import { pageRoutes } from './http/pages/routes.js';
import { platformRoutes } from './http/routes/platforms.js';
import { sessionRoutes } from './http/routes/sessions.js';
import { Metrics } from './metrics/metrics.js';
import { SessionAudit } from './sessions/audit.js';
import { SessionBackends, type ServingStore } from './sessions/backends.js';
import type { SessionStore } from './sessions/store.js';
import { jsonCodec, sealedCodec } from './sessions/codec.js';
import { CookieStore } from './sessions/cookie-store.js';
import { DatabaseStore } from './sessions/database-store.js';
import { GuardedStore, type StoreObserver } from './sessions/guarded-store.js';
import { MirroredStore } from './sessions/mirrored-store.js';
import { createRedisClient, waitForRedis } from './sessions/redis-client.js';
import { RedisStore } from './sessions/redis-store.js';
import { RevocationList } from './sessions/revocations.js';

export interface Switchboard {
  app: Koa;
  deps: AppDeps;
  close(): Promise<void>;
}

export function createLogger(config: Pick<Config, 'logLevel'>): Logger {
  return pino({
    level: config.logLevel,
    // Belt and braces: nothing logs these on purpose, and if something ever did they stay out.
    redact: { paths: ['password', '*.password', 'newPassword', 'currentPassword', 'token', 'cookie', '*.cookie', 'authorization', '*.authorization', 'sid'], censor: '[redacted]' },
  });
}

export async function createSwitchboard(config: Config, logger: Logger = createLogger(config)): Promise<Switchboard> {
  const sequelize = await openDatabase(config.databaseUrl);
  const applied = await migrateUp(sequelize);
  if (applied.length) logger.info({ migrations: applied }, 'applied migrations');
  const models = defineModels(sequelize);
  const metrics = new Metrics();
  const syncError = (what: string) => (err: unknown) => logger.warn({ err }, `${what} sync failed`);

  const revocations = new RevocationList(models, { absoluteTimeoutMs: config.sessions.absoluteTimeoutMs, syncIntervalMs: config.syncIntervalMs, onSyncError: syncError('revocation') });
  await revocations.start();
  const override = new FlagOverride(models, { syncIntervalMs: config.syncIntervalMs, onSyncError: syncError('flag override') });
  await override.start();

  const rollback = new RollbackGuard(config.rollback, (state) => {
    metrics.rollbacks.inc({ from: state.from, to: state.to, trigger: state.trigger });
    logger.error({ event: 'rollback', ...state }, `automatic rollback: sessions go back from ${state.from} to ${state.to} (${state.trigger})`);
  });
  const rollbackTimer = setInterval(() => rollback.evaluate(), 1000);
  rollbackTimer.unref();

  const observer: StoreObserver = {
    operation(backend, operation, outcome, seconds) {
      metrics.storeDuration.observe({ backend, operation }, seconds);
      metrics.storeOperations.inc({ backend, operation, outcome });
      rollback.record(backend as BackendName, outcome === 'success', seconds);
    },
    availability(backend, up) {
      metrics.storeUp.set({ backend }, up ? 1 : 0);
      logger[up ? 'info' : 'warn']({ event: 'backend_availability', backend, up }, `session backend ${backend} ${up ? 'recovered' : 'unavailable: circuit open'}`);
    },
  };

  const codec = config.sessions.encryptAtRest ? sealedCodec(config.sessions.secrets) : jsonCodec;
  const redis = createRedisClient(config.redis);
  let lastRedisError = 0;
  redis.on('error', (err: Error) => {
    // ioredis reports every failed reconnect; one line a minute is enough.
    if (Date.now() - lastRedisError > 60_000) logger.warn({ err: err.message }, 'redis connection error');
    lastRedisError = Date.now();
  });
  await waitForRedis(redis, 1000);

  const database = new DatabaseStore(models, codec);
  const mirrorError = (err: unknown, operation: string) => logger.warn({ err, operation }, 'database copy of a session could not be written');
  // The short deadline exists to fail over fast; the backend that is itself the last resort
  // (the fallback, or every backend with SESSION_FALLBACK=none) has nothing to fail over to.
  const fallback = config.sessions.fallback;
  const guard = (store: SessionStore) => {
    const lastResort = fallback === 'none' || fallback === store.backend;
    return new GuardedStore(store, { ...config.stores, timeoutMs: lastResort ? config.stores.lastResortTimeoutMs : config.stores.timeoutMs }, observer);
  };
  const stores: Record<BackendName, ServingStore> = {
    database: guard(database),
    redis: new MirroredStore(guard(new RedisStore(redis, { keyPrefix: config.redis.keyPrefix, absoluteTimeoutMs: config.sessions.absoluteTimeoutMs, codec })), database, mirrorError),
    cookie: new MirroredStore(guard(new CookieStore(config.sessions.secrets, revocations)), database, mirrorError),
  };
  const backends = new SessionBackends(stores, database, revocations, config.sessions.fallback, {
    fallback(from, to, reason) {
      metrics.fallbacks.inc({ from, to, reason });
    },
    migrated(from, to) {
      metrics.migrations.inc({ from, to });
      rollback.noteMigration(from, to);
    },
    secondaryFailure(err, what) {
      logger.warn({ err, what }, 'secondary session write failed');
    },
  });

  const unleash = config.unleash
    ? new UnleashBackendFlag({ ...config.unleash, backupPath: path.join(config.dataDir, 'unleash'), logger })
    : undefined;
  const flag = new BackendFlag(config.sessions.storage, override, rollback, unleash);

  const deps: AppDeps = {
    config,
    models,
    backends,
    flag,
    metrics,
    logger,
    audit: new SessionAudit(models, logger),
    limiter: new LoginLimiter(config.login),
  };

  const app = new Koa({ proxy: config.trustProxy });
  app.silent = true; // errors are logged by errorHandler, once, without the request's secrets
  app.use(requestMetrics(metrics));
  app.use(errorHandler(logger));
  app.use(securityHeaders());
  app.use(bodyParser({ enableTypes: ['json', 'form'], jsonLimit: '16kb', formLimit: '16kb', encoding: 'utf-8', jsonStrict: true }));
  app.use(sessionMiddleware({ config: config.sessions, backends, flag, metrics, audit: deps.audit }));
  app.use(csrfProtection());
  for (const router of [operationsRoutes(deps), authRoutes(deps), sessionRoutes(deps), platformRoutes(deps), adminRoutes(deps), pageRoutes(deps)]) {
    app.use(router.routes());
    app.use(router.allowedMethods({ throw: false }));
  }
  app.use(async (ctx) => {
    if (ctx.status === 404 && ctx.body === undefined) throw new NotFoundError(`No route for ${ctx.method} ${ctx.path}`);
  });

  return {
    app,
    deps,
    async close() {
      clearInterval(rollbackTimer);
      revocations.stop();
      override.stop();
      await unleash?.close();
      redis.disconnect();
      await sequelize.close();
    },
  };
}

export { BACKENDS };
