import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * mkdir -p, one level at a time: Node's own `recursive` mkdir spins forever on a path under a
 * directory that refuses new entries with ENOENT (/proc), and start-up would hang in silence.
 * A path that exists but is not a directory fails with ENOTDIR.
 */
export function makeDirectory(dir: string): void {
  try {
    mkdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      if (statSync(dir).isDirectory()) return;
      throw Object.assign(new Error(`${dir} is a file, not a directory`), { code: 'ENOTDIR' });
    }
    if (code !== 'ENOENT' || path.dirname(dir) === dir) throw err;
    makeDirectory(path.dirname(dir));
    mkdirSync(dir);
  }
}
