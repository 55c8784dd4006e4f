/**
 * What the bench scripts' command lines share (each parses its own options with parseArgs, which
 * keeps their types): a usage error that exits 2, `--help` printing the script's header comment,
 * and whole-number options checked at once.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Exits 2 with `message`, named for the script `name`. */
export function usageFor(name: string): (message: string) => never {
  return (message) => {
    console.error(`${name}: ${message} (--help lists the options)`);
    process.exit(2);
  };
}

/** Prints the header comment of the script at `scriptUrl` (its `import.meta.url`), and exits. */
export function printHelp(scriptUrl: string): never {
  console.log(readFileSync(fileURLToPath(scriptUrl), 'utf8').split('*/')[0]!.replace(/^\/\*\*|^ \* ?/gm, ''));
  process.exit(0);
}

/** `--option`'s value as a whole number of at least `min`, or a usage error. */
export function wholeOption(usage: (message: string) => never) {
  return (option: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`--${option} must be a whole number, at least ${min} (got ${v})`);
    return n;
  };
}
