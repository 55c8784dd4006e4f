/**
 * Builds the server from a validated Config: the session layer (core.ts), the flag, and the
 * Koa middleware in the order requests meet them.
 */
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import Koa from 'koa';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { LoginLimiter } from './auth/login-limiter.js';
import { isDatabaseOutageError } from './db/database.js';
import { openCore } from './core.js';
import type { Config } from './config/config.js';
import { BackendFlag } from './flags/backend-flag.js';
import { UnleashBackendFlag } from './flags/unleash-flag.js';
import type { AppDeps } from './http/deps.js';
import { errorHandler } from './http/error-handler.js';
import { NotFoundError } from './http/errors.js';
import { csrfProtection } from './http/csrf.js';
import { requestMetrics } from './http/request-metrics.js';
import { securityHeaders } from './http/security-headers.js';
import { sessionMiddleware } from './http/session-middleware.js';
import { adminGate, adminRoutes } from './http/routes/admin.js';
import { accountRoutes } from './http/routes/account.js';
import { authRoutes } from './http/routes/auth.js';
import { operationsRoutes } from './http/routes/operations.js';
import { FormFlashes } from './http/pages/form-flash.js';
import { formNavigation } from './http/pages/form-navigation.js';
import { navigationErrors } from './http/pages/navigation-errors.js';
import { Assets } from './http/pages/assets.js';
import { pageRoutes } from './http/pages/routes.js';
import { platformRoutes } from './http/routes/platforms.js';
import { sessionRoutes } from './http/routes/sessions.js';
import { SessionAudit } from './sessions/audit.js';
import { BackendUnavailableError } from './sessions/errors.js';

/** The largest request body read (JSON or form): 413 payload_too_large above it. */
export const MAX_BODY_BYTES = 16 * 1024;

export interface Switchboard {
  app: Koa;
  deps: AppDeps;
  close(): Promise<void>;
}

export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    // Belt and braces: nothing logs these on purpose, and if something ever did they stay out.
    redact: { paths: ['password', '*.password', 'newPassword', 'currentPassword', 'token', 'cookie', '*.cookie', 'authorization', '*.authorization', 'sid'], censor: '[redacted]' },
    serializers: { err: loggedError },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * An error as pino logs it, less what clients hang on their errors: Sequelize puts the SQL and its
 * bound values on the error (and on the driver's error inside it) — a session's data with its
 * CSRF token, addresses, User-Agents — and ioredis the command with its arguments (an AUTH's
 * password, a session record). pino's own serializer would log every such property. What is kept
 * says what went wrong: the type, the message, the code (the driver's, for Sequelize), and the
 * stack — but not for a backend that is down, full or slow, which its code and message say all
 * of: an outage's lines are many, and the same stack on each hides what is new among them.
 */
function loggedError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const own = (err as { code?: unknown }).code;
  const driver = (err as { parent?: { code?: unknown } }).parent;
  const outage = err instanceof BackendUnavailableError || isDatabaseOutageError(err);
  return { type: err.constructor.name, name: err.name, message: err.message, code: own ?? driver?.code, ...(!outage && { stack: err.stack }) };
}

export async function createSwitchboard(config: Config, logger: Logger = createLogger(config)): Promise<Switchboard> {
  const core = await openCore(config, logger);
  const { models, metrics, backends, override, rollback } = core;
  const unleash = config.unleash
    ? new UnleashBackendFlag({ ...config.unleash, backupPath: path.join(config.dataDir, 'unleash'), logger })
    : undefined;
  if (unleash) metrics.watchUnleash(() => unleash.status());
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
    lifecycle: { draining: false },
  };

  // Behind one proxy, which appends the address it saw: the last X-Forwarded-For entry is the
  // client's; earlier ones are whatever the client sent (it could dodge the login limits).
  const app = new Koa({ proxy: config.trustProxy, maxIpsCount: 1 });
  app.silent = true; // errors are logged by errorHandler, once, without the request's secrets
  // One router holding every route: a request is matched once, against one table, instead of
  // passing through a router (and its allowedMethods) per file.
  const router = new Router();
  const flashes = new FormFlashes({ secrets: config.sessions.secrets, deployment: core.deployment, sessionCookieName: config.sessions.cookieName, secure: config.sessions.cookieSecure });
  const assets = new Assets();
  for (const part of [operationsRoutes(deps), authRoutes(deps), accountRoutes(deps), sessionRoutes(deps), platformRoutes(deps), adminRoutes(deps), pageRoutes(deps, flashes, assets)]) {
    router.use(part.routes());
  }
  // Outermost: the request metrics count the API's answer (a 401, a 503), not the page it becomes.
  app.use(formNavigation(flashes));
  app.use(navigationErrors(assets));
  app.use(requestMetrics(metrics, router));
  app.use(errorHandler(logger));
  app.use(securityHeaders());
  // A body that cannot be read is the error of a route that reads it (validation.ts's
  // parseBody), not of every route: logout and the other actions without input ignore their body.
  const keepBodyError = (err: Error, ctx: Koa.Context) => {
    ctx.state.bodyError = err;
  };
  // Content codings are case-insensitive (RFC 9110 §8.4.1); the body parser knows them lower-cased.
  app.use((ctx, next) => {
    const coding = ctx.req.headers['content-encoding'];
    if (coding) ctx.req.headers['content-encoding'] = coding.toLowerCase();
    return next();
  });
  // Any JSON media type (`+json`: application/merge-patch+json for PATCH /api/session, …). The
  // list is merged into the parser's own by index (lodash.merge): application/json stays first.
  app.use(bodyParser({ enableTypes: ['json', 'form'], extendTypes: { json: ['application/json', '+json'] }, jsonLimit: MAX_BODY_BYTES, formLimit: MAX_BODY_BYTES, encoding: 'utf-8', jsonStrict: true, onError: keepBodyError }));
  app.use(sessionMiddleware({ config: config.sessions, backends, flag, metrics, audit: deps.audit }));
  app.use(csrfProtection(router));
  app.use(adminGate(config.adminToken));
  app.use(router.routes());
  app.use(router.allowedMethods({ throw: false }));
  app.use(async (ctx) => {
    // The path as sent, up to a line's worth: a client's 8 kB path is not worth echoing whole.
    const path = ctx.path.length > 200 ? `${ctx.path.slice(0, 200)}…` : ctx.path;
    if (ctx.status === 404 && ctx.body === undefined) throw new NotFoundError(`No route for ${ctx.method} ${path}`);
  });

  return {
    app,
    deps,
    async close() {
      await unleash?.close();
      await deps.audit.close();
      await core.close();
    },
  };
}
