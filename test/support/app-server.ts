/**
 * Runs Switchboard as a real child process (`node --import tsx src/server.ts`), the way
 * `npm start` does, on a free port with its own data directory. Used by every black-box test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';

export interface AppProcess {
  url: string;
  port: number;
  dataDir: string;
  env: Record<string, string>;
  /** Everything the process printed so far. */
  output(): string;
  stop(): Promise<void>;
  /** Sends SIGTERM and waits for the process to end by itself, however long it takes (the test's timeout bounds it). */
  terminate(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** How the last process ended (after `stop`): SIGKILL means it did not stop by itself within 5 s of SIGTERM. */
  lastExit(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /**
   * Stops and starts again with the same data directory and port (and optionally changed env);
   * `whileStopped` runs between the two.
   */
  restart(env?: Record<string, string>, whileStopped?: () => Promise<void>): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

const ROOT = path.resolve(import.meta.dirname, '..', '..');

export async function startApp(env: Record<string, string> = {}): Promise<AppProcess> {
  const dataDir = env.DATA_DIR ?? mkdtempSync(path.join(tmpdir(), 'switchboard-test-'));
  let port = Number(env.PORT ?? (await freePort()));
  let fullEnv: Record<string, string> = {
    DATA_DIR: dataDir,
    DATABASE_URL: `sqlite:${path.join(dataDir, 'switchboard.sqlite')}`,
    LOG_LEVEL: 'warn',
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    // Test machines are shared and noisy, and start-up (JIT, first connections) is slow: a
    // longer deadline than the default keeps a scheduling hiccup from failing over. Tests about
    // deadlines and failover set their own.
    STORE_TIMEOUT_MS: '250',
    // Tests stop instances by the dozen, with no load balancer to wait for; shutdown.test.ts
    // tests the delay.
    SHUTDOWN_DELAY_MS: '0',
    ...env,
    PORT: String(port),
  };
  let child: ChildProcess | undefined;
  let out = '';

  async function launch() {
    child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...fullEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<never>((_, reject) => child?.once('exit', (code) => reject(new Error(`switchboard exited (${code}) before it was ready:\n${out}`))));
    const ready = (async () => {
      // A bound against a hang only: a cold start (tsx compiling the server) took 25 s at a load of 14.
      for (let attempt = 0; attempt < 1200; attempt++) {
        try {
          const res = await fetch(`http://127.0.0.1:${port}/healthz`);
          if (res.ok) return;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`switchboard did not become ready:\n${out}`);
    })();
    await Promise.race([ready, exited]);
    child.removeAllListeners('exit');
  }

  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  async function stop({ killAfterMs = 5000 as number | null } = {}) {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', (code, signal) => {
        exit = { code, signal };
        resolve();
      });
      c.kill('SIGTERM');
      if (killAfterMs !== null) setTimeout(() => c.kill('SIGKILL'), killAfterMs).unref();
    });
    live.delete(c);
  }

  // The free port is found before the child binds it, a second or two later: something else
  // may take it meanwhile. A port of our own choosing is then chosen again.
  for (let attempt = 1; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      const taken = /PORT: 127\.0\.0\.1:\d+ is already in use/.test(out);
      if (env.PORT || !taken || attempt >= 3) throw err;
      port = await freePort();
      fullEnv = { ...fullEnv, PORT: String(port) };
      out = '';
    }
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    get env() {
      return fullEnv;
    },
    output: () => out,
    lastExit: () => exit,
    async terminate() {
      await stop({ killAfterMs: null });
      return exit!;
    },
    async stop() {
      await stop();
      if (!env.DATA_DIR) rmSync(dataDir, { recursive: true, force: true });
    },
    async restart(changes = {}, whileStopped) {
      await stop();
      await whileStopped?.();
      fullEnv = { ...fullEnv, ...changes };
      await launch();
    },
  };
}
