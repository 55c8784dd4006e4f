/**
 * A server binary run as a child of the test process (redis-server, prometheus): the tail of
 * its output for error messages, whether it still runs, and a bounded wait for its exit; and
 * the scratch directories such servers keep their files in.
 *
 * Children and scratch directories still around when the test process exits are killed and
 * removed by an `exit` hook. Only the `exit` event: a signal handler here would change how the
 * test process reacts to signals (and fire on a test's own `process.emit('SIGTERM')`). Ctrl-C
 * reaches the children anyway, as they share the terminal's process group.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const EXIT_WAIT_MS = 10_000;
const OUTPUT_TAIL_CHARS = 4000;

const running = new Set<ChildProcess>();
const scratchDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) child.kill('SIGKILL');
    for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** A fresh directory under the OS temp directory, removed at exit unless removed before. */
export function makeScratchDir(prefix: string): string {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratchDirs.add(dir);
  return dir;
}

export function removeScratchDir(dir: string): void {
  scratchDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

export class ServerChild {
  readonly process: ChildProcess;
  /** Settles when the process has exited (or could not be started). */
  readonly exited: Promise<void>;
  private alive = true;
  private tail = '';

  /** `missing`: what to say when the binary is not there (ENOENT), after its name. */
  constructor(command: string, args: readonly string[], missing: string) {
    installExitHook();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.process = child;
    running.add(child);
    const keepTail = (chunk: Buffer): void => {
      this.tail = (this.tail + chunk.toString()).slice(-OUTPUT_TAIL_CHARS);
    };
    child.stdout?.on('data', keepTail);
    child.stderr?.on('data', keepTail);
    this.exited = new Promise((resolve) => {
      const gone = (): void => {
        running.delete(child);
        this.alive = false;
        resolve();
      };
      child.once('exit', gone);
      child.once('error', (err) => {
        this.tail += `\n${'code' in err && err.code === 'ENOENT' ? `${command} ${missing}` : err.message}`;
        gone();
      });
    });
    // Neither the child nor its pipes keep the test process alive; the exit hook ends them.
    child.unref();
    (child.stdout as Socket | null)?.unref();
    (child.stderr as Socket | null)?.unref();
  }

  get running(): boolean {
    return this.alive;
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  /** The last few thousand characters the process wrote, for error messages. */
  get output(): string {
    return this.tail;
  }

  kill(signal: NodeJS.Signals): void {
    this.process.kill(signal);
  }

  /** Waits (bounded) for the process to exit; false if it is still there. */
  async waitForExit(ms = EXIT_WAIT_MS): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    try {
      return await Promise.race([this.exited.then(() => true as const), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it is still there after the wait; throws if even that does not end it. */
  async stop(what: string): Promise<void> {
    if (!this.alive) return;
    this.kill('SIGTERM');
    if (await this.waitForExit()) return;
    this.kill('SIGKILL');
    if (!(await this.waitForExit())) throw new Error(`${what} (pid ${this.pid}) did not exit`);
  }
}
