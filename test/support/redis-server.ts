import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';

const HOST = '127.0.0.1';
/** The machine's own Redis; nothing here may start on it, stop it or write to it. */
const MACHINE_REDIS_PORT = 6379;
const POLL_INTERVAL_MS = 50;
/** redis-server is up in well under a second; 15 s covers a loaded CI machine. */
const READY_ATTEMPTS = 300;
const EXIT_WAIT_MS = 10_000;

/** A redis-server child process of this test process, on its own port and scratch directory. */
export interface RedisProcess {
  readonly port: number;
  /** `redis://127.0.0.1:PORT/0` */
  readonly url: string;
  /** Scratch directory given as `--dir`; removed when the test process exits. */
  readonly dir: string;
  /** pid of the running redis-server; `undefined` while it is down. */
  readonly pid: number | undefined;
  /** Graceful shutdown (SIGTERM, nothing saved); resolves once the process has exited. No-op when down. */
  stop(): Promise<void>;
  /** SIGKILL, as in a crash; resolves once the process has exited. No-op when down. */
  kill(): Promise<void>;
  /** Starts redis-server again on the same port and directory (stopping it first if it runs); data is gone. */
  restart(): Promise<void>;
  /**
   * Simulates a hung server: SIGSTOP now, SIGCONT after `ms`. Resolves as soon as the process
   * is stopped — not when it resumes — so the caller can send requests into the hang.
   * Connections are still accepted by the kernel but nothing is answered until the resume.
   */
  pause(ms: number): Promise<void>;
  /** Ends a pause early (SIGCONT). No-op when not paused. */
  resume(): void;
}

export interface StartRedisOptions {
  /** Port to listen on; by default a free one. Never 6379, which belongs to the machine's Redis. */
  port?: number;
  /** More redis-server arguments, once port and scratch directory are known (the cluster helper uses it). */
  extraArgs?: (server: { port: number; dir: string }) => string[];
  /** Start a Redis Sentinel (quorum 1) watching the master on this port under this name, instead of a server. */
  sentinelOf?: { port: number; name: string };
}

/**
 * Spawns `redis-server` as a child of this process (never daemonized) bound to 127.0.0.1,
 * with persistence off and a fresh scratch directory, and resolves once it answers PING.
 * Children still running when the test process exits are killed by an `exit` hook.
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisProcess> {
  if (opts.port === MACHINE_REDIS_PORT) {
    throw new Error(`startRedis: port ${MACHINE_REDIS_PORT} belongs to the machine's own Redis; pick another or leave it out`);
  }
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-redis-'));
  scratchDirs.add(dir);
  // A port from freePort() can be taken by someone else before redis-server binds it; retry then.
  const attempts = opts.port === undefined ? 3 : 1;
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    // Sentinel takes its configuration from a file it may rewrite, so that comes first.
    const leading = opts.sentinelOf ? [sentinelConfig(dir, opts.sentinelOf), '--sentinel'] : [];
    const server = new RedisServer(port, dir, opts.extraArgs?.({ port, dir }) ?? [], leading);
    try {
      await server.start();
      return server;
    } catch (err) {
      if (attempt < attempts && err instanceof PortTakenError) continue;
      scratchDirs.delete(dir);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
}

/**
 * Sends one command over a fresh connection and returns the reply (simple string, integer or
 * bulk string; a nil bulk is `''`). A Redis error reply rejects. For readiness probes and
 * administration in tests, so no client library's reconnect logic gets in the way.
 */
export function redisCommand(port: number, args: readonly string[], timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: HOST, port });
    let received = Buffer.alloc(0);
    let settled = false;
    const finish = (error: Error | undefined, value = ''): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (error) reject(error);
      else resolve(value);
    };
    socket.setTimeout(timeoutMs, () =>
      finish(new Error(`redis ${HOST}:${port} ${args[0] ?? ''}: no reply within ${timeoutMs} ms`)),
    );
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error(`redis ${HOST}:${port}: connection closed before a reply`)));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const reply = parseReply(received);
      if (reply) finish(reply.error, reply.value);
    });
    socket.write(encodeCommand(args));
  });
}

/** Polls `check` every 50 ms, at most `attempts` times; throws naming `what` (and the last error) if it never holds. */
export async function waitUntil(
  what: string,
  check: () => boolean | Promise<boolean>,
  attempts = READY_ATTEMPTS,
): Promise<void> {
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    await sleep(POLL_INTERVAL_MS);
  }
  const cause = lastError instanceof Error ? `: ${lastError.message}` : '';
  throw new Error(`timed out waiting for ${what}${cause}`);
}

class PortTakenError extends Error {}

function sentinelConfig(dir: string, master: { port: number; name: string }): string {
  const file = join(dir, 'sentinel.conf');
  writeFileSync(file, `sentinel monitor ${master.name} ${HOST} ${master.port} 1\nsentinel down-after-milliseconds ${master.name} 1000\n`);
  return file;
}

class RedisServer implements RedisProcess {
  readonly url: string;
  private child: ChildProcess | undefined;
  private alive = false;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private resumeTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly port: number,
    readonly dir: string,
    private readonly extraArgs: readonly string[],
    private readonly leadingArgs: readonly string[] = [],
  ) {
    this.url = `redis://${HOST}:${port}/0`;
  }

  get pid(): number | undefined {
    return this.alive ? this.child?.pid : undefined;
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const child = this.spawnChild();
    for (let attempt = 0; attempt < READY_ATTEMPTS; attempt++) {
      if (!this.alive) break;
      if (await this.answersPing()) return;
      await sleep(POLL_INTERVAL_MS);
    }
    const why = this.alive ? 'did not answer PING in time' : 'exited during start-up';
    if (this.alive) {
      child.kill('SIGKILL');
      await this.waitForExit();
    }
    const message = `redis-server on ${HOST}:${this.port} ${why}\n${this.output.trim()}`;
    throw this.output.includes('Address already in use') ? new PortTakenError(message) : new Error(message);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    this.resume(); // a stopped process would not act on SIGTERM
    child.kill('SIGTERM');
    if (await this.waitForExit()) return;
    child.kill('SIGKILL');
    if (!(await this.waitForExit())) throw new Error(`redis-server pid ${child.pid} on port ${this.port} did not exit`);
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    this.clearResumeTimer();
    child.kill('SIGKILL');
    if (!(await this.waitForExit())) throw new Error(`redis-server pid ${child.pid} on port ${this.port} survived SIGKILL`);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async pause(ms: number): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) throw new Error(`redis-server on port ${this.port} is not running; cannot pause it`);
    this.clearResumeTimer();
    child.kill('SIGSTOP');
    const pid = child.pid;
    if (pid !== undefined) await waitUntil(`redis-server pid ${pid} to stop`, () => isStopped(pid));
    this.resumeTimer = setTimeout(() => this.resume(), ms);
    // Left alone at exit, the child is SIGKILLed by the exit hook (which works on stopped processes).
    this.resumeTimer.unref();
  }

  resume(): void {
    this.clearResumeTimer();
    if (this.alive) this.child?.kill('SIGCONT');
  }

  private spawnChild(): ChildProcess {
    const args = [
      ...this.leadingArgs,
      '--port', String(this.port),
      '--bind', HOST,
      '--save', '',
      '--appendonly', 'no',
      '--dir', this.dir,
      '--daemonize', 'no',
      '--loglevel', 'warning',
      ...this.extraArgs,
    ];
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.alive = true;
    this.output = '';
    running.add(child);
    const keepTail = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-4000);
    };
    child.stdout?.on('data', keepTail);
    child.stderr?.on('data', keepTail);
    this.exited = new Promise((resolve) => {
      const gone = (): void => {
        running.delete(child);
        if (this.child === child) this.alive = false;
        resolve();
      };
      child.once('exit', gone);
      child.once('error', (err) => {
        this.output += `\n${err.message}${'code' in err && err.code === 'ENOENT' ? ' (is the redis-server package installed?)' : ''}`;
        gone();
      });
    });
    // Neither the child nor its pipes keep the test process alive; the exit hook ends them.
    child.unref();
    (child.stdout as Socket | null)?.unref();
    (child.stderr as Socket | null)?.unref();
    return child;
  }

  private async answersPing(): Promise<boolean> {
    try {
      return (await redisCommand(this.port, ['PING'], 500)) === 'PONG';
    } catch {
      return false;
    }
  }

  /** Waits (bounded) for the current child to exit; false if it is still there. */
  private async waitForExit(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), EXIT_WAIT_MS);
    });
    try {
      return await Promise.race([this.exited.then(() => true as const), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private clearResumeTimer(): void {
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.resumeTimer = undefined;
  }
}

const running = new Set<ChildProcess>();
const scratchDirs = new Set<string>();
let exitHookInstalled = false;

/**
 * Only the `exit` event: a signal handler here would change how the test process reacts to
 * signals (and fire on a test's own `process.emit('SIGTERM')`). Ctrl-C reaches the children
 * anyway, as they share the terminal's process group.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
    for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** Linux: the state letter in /proc/PID/stat is `T` once SIGSTOP took effect. Elsewhere assume it did. */
function isStopped(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === 'T' || state === 't';
}

function encodeCommand(args: readonly string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
}

/** One RESP2 reply from the start of `buf`, or `undefined` if it is not complete yet. Arrays are not needed here. */
function parseReply(buf: Buffer): { value?: string; error?: Error } | undefined {
  const lineEnd = buf.indexOf('\r\n');
  if (lineEnd < 0) return undefined;
  const type = buf.toString('latin1', 0, 1);
  const line = buf.toString('utf8', 1, lineEnd);
  switch (type) {
    case '+':
    case ':':
      return { value: line };
    case '-':
      return { error: new Error(line) };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: '' };
      const start = lineEnd + 2;
      if (buf.length < start + length + 2) return undefined;
      return { value: buf.toString('utf8', start, start + length) };
    }
    default:
      return { error: new Error(`unexpected RESP reply type ${JSON.stringify(type)}`) };
  }
}
