/** What the operator scripts share: their options, configuration as the server reads it, and a quiet logger. */
import 'dotenv/config';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { pino } from 'pino';
import lockfile from 'proper-lockfile';
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

/** sysexits' EX_TEMPFAIL: not a failure of this run; try again once the other copy has finished. */
export const ANOTHER_COPY_EXIT_CODE = 75;
/**
 * How long the lock of a copy that stopped without releasing it (killed -9, its host gone) is
 * still taken as held: the holder renews it every half of this.
 */
export const LOCK_STALE_MS = 20_000;

/**
 * One copy at a time of a script whose progress is kept in `file` (its position): a second copy
 * stops at once with one line naming the first (exit 75). proper-lockfile's lock (a directory
 * beside `file`, renewed while held, so it works on storage shared between hosts too) is released
 * however the process exits short of a kill; a killed copy's lock is taken over once stale. Who
 * holds it is written beside it, for that line.
 */
export async function oneCopyAtATime(script: string, file: string): Promise<void> {
  const owner = `${file}.owner`;
  try {
    await lockfile.lock(file, {
      realpath: false,
      stale: LOCK_STALE_MS,
      // Held up past the stale time (a laptop asleep, Ctrl-Z): another copy may have taken the
      // lock. Said, not thrown: two copies share the position safely (nothing lost or moved
      // twice), they only both say "(resuming)" from it.
      onCompromised: () => console.error(`${script}: this copy was held up and lost its lock; another copy may be running beside it`),
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ELOCKED') {
      // DATA_DIR read-only or immutable, or a file where the lock's directory goes.
      console.error(`${script}: DATA_DIR: cannot take the lock ${file}.lock (${code ?? (err as Error).message}); DATA_DIR must be writable, and a file of that name removed`);
      process.exit(1);
    }
    let holder = '';
    try {
      const { pid, host, since } = JSON.parse(readFileSync(owner, 'utf8')) as { pid: number; host: string; since: string };
      holder = ` (pid ${pid} on ${host}, since ${since})`;
    } catch {
      // Not written yet, or by a release that did not write it: the line goes without.
    }
    console.error(`${script}: another copy is running${holder}; wait for it to finish or stop it (a copy that was killed holds it ${LOCK_STALE_MS / 1000} s more)`);
    process.exit(ANOTHER_COPY_EXIT_CODE);
  }
  const mine = JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() });
  writeFileSync(owner, mine);
  process.once('exit', () => {
    try {
      if (readFileSync(owner, 'utf8') === mine) rmSync(owner);
    } catch {
      // gone already
    }
  });
}
