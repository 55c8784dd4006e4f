/**
 * `npm start`: read the configuration (a bad value stops here with one line naming it),
 * apply pending migrations, listen, and shut down cleanly on SIGTERM/SIGINT.
 */
import 'dotenv/config';
import { createLogger, createSwitchboard } from './app.js';
import { ConfigError, loadConfig, type Config } from './config/config.js';

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

const logger = createLogger(config);
try {
  const switchboard = await createSwitchboard(config, logger);
  const server = switchboard.app.listen(config.port, config.host, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    logger.info({ host: config.host, port, storage: config.sessions.storage, database: config.databaseUrl.split(':')[0] }, `switchboard listening on http://${config.host}:${port}`);
  });
  server.keepAliveTimeout = 65_000;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close(() => {
      switchboard.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    });
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  const message = err instanceof Error ? err.message : String(err);
  console.error(`switchboard: could not start: ${message}`);
  process.exit(1);
}
