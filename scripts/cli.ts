/** What the operator scripts share: configuration as the server reads it, and a quiet logger. */
import 'dotenv/config';
import { pino } from 'pino';
import { ConfigError, loadConfig, type Config } from '../src/config/config.js';

export function scriptConfig(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`configuration error: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}

export const scriptLogger = (config: Config) => pino({ level: config.logLevel === 'info' ? 'warn' : config.logLevel });
