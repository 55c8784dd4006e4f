/** What the operator scripts share: their options, configuration as the server reads it, and a quiet logger. */
import 'dotenv/config';
import { parseArgs, type ParseArgsConfig } from 'node:util';
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

/**
 * The command line's options; an unknown or malformed one stops the script with one line and
 * how to call it (exit 2), not a stack trace.
 */
export function scriptOptions<T extends NonNullable<ParseArgsConfig['options']>>(options: T, usage: string) {
  try {
    return parseArgs({ options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n\n${usage}`);
    process.exit(2);
  }
}

/**
 * From here on, an error the script cannot go on from (a database or Redis it cannot reach)
 * stops it with one line naming what failed and exit 1, not a stack trace.
 */
export function stopOnFailure(script: string): void {
  const fail = (err: unknown) => {
    console.error(`${script}: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`);
    process.exit(1);
  };
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
}

// Errors only (the scripts report their own failures in one line), unless LOG_LEVEL asks for more detail.
export const scriptLogger = (config: Config) => pino({ level: ['debug', 'trace'].includes(config.logLevel) ? config.logLevel : 'error' });

/**
 * Ctrl-C or SIGTERM: `finish` says where the run stopped (and records what must be), then the
 * script exits 130 or 143, as a shell expects. Bounded: a database that does not answer does not
 * hold the exit.
 */
export function onInterrupt(finish: () => Promise<void> | void): void {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      const exit = () => process.exit(code);
      setTimeout(exit, 2_000).unref();
      void Promise.resolve()
        .then(finish)
        .catch(() => undefined)
        .finally(exit);
    });
  }
}
