/**
 * `npm start`: read the configuration (a bad value stops here with one line naming it),
 * apply pending migrations, listen, and shut down cleanly on SIGTERM/SIGINT.
 */
import 'dotenv/config';
import http from 'node:http';
import { createLogger, createSwitchboard, MAX_BODY_BYTES } from './app.js';
import { ConfigError, loadConfig, type Config } from './config/config.js';
import { answerClientErrors, refusesWithoutHost } from './http/client-errors.js';
import { inTurnPerConnection } from './http/connection-turns.js';

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`switchboard: configuration error: ${err.message}`);
    process.exit(1);
  }
  throw err;
}

/**
 * A listen failure as one line naming the variable to change. `listen` reports these as an
 * 'error' event after start-up code has returned, so they would otherwise end the process as
 * an unhandled event with a stack trace.
 */
function listenProblem(err: NodeJS.ErrnoException, { host, port }: Pick<Config, 'host' | 'port'>): string {
  switch (err.code) {
    case 'EADDRINUSE':
      return `PORT: ${host}:${port} is already in use; set PORT to a free port`;
    case 'EACCES':
      return `PORT: not allowed to listen on port ${port}; use a port above 1023`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EADDRNOTAVAIL':
      return `HOST: cannot listen on ${host} (${err.code}); set HOST to an address of this machine`;
    default:
      return `cannot listen on ${host}:${port}: ${err.message}`;
  }
}

/** How long SIGTERM waits, once the listener is closed, for requests in flight before it closes their connections. */
const SHUTDOWN_GRACE_MS = 10_000;

const logger = createLogger(config);
try {
  for (const warning of config.warnings) logger.warn({ event: 'weak_setting' }, warning);
  const switchboard = await createSwitchboard(config, logger);
  const handle = switchboard.app.callback();
  const { lifecycle } = switchboard.deps;
  // Node waits 5 minutes for a request's body (60 s for its headers), checking every 30 s: a
  // client that declares more than it sends held a socket that long. Bodies here are 16 kB at
  // most, so REQUEST_TIMEOUT_MS (30 s) is plenty for the slowest honest client.
  const timeouts = {
    requestTimeout: config.requestTimeoutMs,
    headersTimeout: config.requestTimeoutMs,
    connectionsCheckingInterval: Math.min(30_000, Math.max(100, config.requestTimeoutMs / 10)),
  };
  const serve = inTurnPerConnection((req, res) => {
    if (refusesWithoutHost(req, res)) return void switchboard.deps.metrics.refusedRequests.inc({ code: 'bad_request' });
    // Draining (SIGTERM): each answer closes its connection, so keep-alive clients go elsewhere
    // instead of keeping this instance busy until it is killed mid-request.
    if (lifecycle.draining) res.setHeader('Connection', 'close');
    void handle(req, res);
  });
  const server = http.createServer({ requireHostHeader: false, ...timeouts }, serve);
  // A client that asks before sending its body (`Expect: 100-continue`) is told to go on only if
  // the body can fit: one declaring more gets its 413 at once, not after uploading it all.
  server.on('checkContinue', (req, res) => {
    if (!(Number(req.headers['content-length']) > MAX_BODY_BYTES)) res.writeContinue();
    serve(req, res);
  });
  server.keepAliveTimeout = 65_000;
  answerClientErrors(server, (code) => switchboard.deps.metrics.refusedRequests.inc({ code }));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await switchboard.close().catch(() => undefined);
    throw new Error(listenProblem(err as NodeJS.ErrnoException, config));
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info({ host: config.host, port, storage: config.sessions.storage, database: config.databaseUrl.split(':')[0] }, `switchboard listening on http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`);
  let finishing: Promise<void> | undefined;
  // Closing flushes what is written behind (the database copies of the last MIRROR_FLUSH_MS).
  const finish = () =>
    (finishing ??= switchboard.close().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'the stores did not close cleanly');
        process.exit(1);
      },
    ));
  const stopListening = () => {
    // No new connections; idle ones close now, busy ones after their answer (Connection: close,
    // or, for an answer begun before SIGTERM, once it has left them idle).
    server.close(() => void finish());
    server.closeIdleConnections();
    setInterval(() => server.closeIdleConnections(), 50).unref();
    // A client that never finishes its request is not waited for past this.
    setTimeout(() => {
      server.getConnections((_, open) => {
        if (open > 0) logger.warn({ connections: open, graceMs: SHUTDOWN_GRACE_MS }, 'requests unanswered after the grace period: their connections are closed');
        server.closeAllConnections();
        void finish();
      });
    }, SHUTDOWN_GRACE_MS).unref();
  };
  const stop = (signal: string) => {
    if (lifecycle.draining) return;
    lifecycle.draining = true;
    logger.info({ signal, delayMs: config.shutdownDelayMs }, 'shutting down');
    // For SHUTDOWN_DELAY_MS the instance goes on serving — /readyz says `draining`, so a load
    // balancer stops sending here — and each answer closes its connection, so keep-alive clients
    // leave after an answer. Closing idle connections at once instead reset requests that clients
    // had already sent on them (on a busy machine, still unread in the socket): lost, unanswered.
    setTimeout(stopListening, config.shutdownDelayMs);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  const message = err instanceof Error ? err.message : String(err);
  // Some settings can only be judged once their server answers (REDIS_URL's database).
  console.error(err instanceof ConfigError ? `switchboard: configuration error: ${message}` : `switchboard: could not start: ${message}`);
  process.exit(1);
}
