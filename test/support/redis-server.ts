import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeScratchDir, removeScratchDir, ServerChild } from './child-process.js';
import { freePort } from './ports.js';

const HOST = '127.0.0.1';
/** The machine's own Redis; nothing here may start on it, stop it or write to it. */
const MACHINE_REDIS_PORT = 6379;
const POLL_INTERVAL_MS = 50;
/** redis-server is up in well under a second; 15 s covers a loaded CI machine. */
const READY_ATTEMPTS = 300;

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
  const dir = makeScratchDir('switchboard-redis-');
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
      removeScratchDir(dir);
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

/**
 * A Sentinel that calls the master down after 1 s. Its failover-timeout is 10 s rather than 180:
 * two Sentinels that start an election at the same moment each vote for themselves, and each tries
 * again only after twice that timeout — six minutes by default, past any test's wait (seen in a
 * full run: the two Sentinels left beside a hung one never promoted the replica).
 */
function sentinelConfig(dir: string, master: { port: number; name: string }): string {
  const file = join(dir, 'sentinel.conf');
  writeFileSync(file, `sentinel monitor ${master.name} ${HOST} ${master.port} 1\nsentinel down-after-milliseconds ${master.name} 1000\nsentinel failover-timeout ${master.name} 10000\n`);
  return file;
}

class RedisServer implements RedisProcess {
  readonly url: string;
  /** The current redis-server process; a restart starts another. */
  private proc: ServerChild | undefined;
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
    return this.proc?.running ? this.proc.pid : undefined;
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const proc = this.spawnChild();
    for (let attempt = 0; attempt < READY_ATTEMPTS; attempt++) {
      if (!proc.running) break;
      if (await this.answersPing()) return;
      await sleep(POLL_INTERVAL_MS);
    }
    const why = proc.running ? 'did not answer PING in time' : 'exited during start-up';
    if (proc.running) {
      proc.kill('SIGKILL');
      await proc.waitForExit();
    }
    const message = `redis-server on ${HOST}:${this.port} ${why}\n${proc.output.trim()}`;
    throw proc.output.includes('Address already in use') ? new PortTakenError(message) : new Error(message);
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc?.running) return;
    this.resume(); // a stopped process would not act on SIGTERM
    await proc.stop(`redis-server on port ${this.port}`);
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc?.running) return;
    this.clearResumeTimer();
    proc.kill('SIGKILL');
    if (!(await proc.waitForExit())) throw new Error(`redis-server pid ${proc.pid} on port ${this.port} survived SIGKILL`);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async pause(ms: number): Promise<void> {
    const proc = this.proc;
    if (!proc?.running) throw new Error(`redis-server on port ${this.port} is not running; cannot pause it`);
    this.clearResumeTimer();
    proc.kill('SIGSTOP');
    const pid = proc.pid;
    if (pid !== undefined) await waitUntil(`redis-server pid ${pid} to stop`, () => isStopped(pid));
    this.resumeTimer = setTimeout(() => this.resume(), ms);
    // Left alone at exit, the child is SIGKILLed by the exit hook (which works on stopped processes).
    this.resumeTimer.unref();
  }

  resume(): void {
    this.clearResumeTimer();
    if (this.proc?.running) this.proc.kill('SIGCONT');
  }

  private spawnChild(): ServerChild {
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
    this.proc = new ServerChild('redis-server', args, 'is not installed or not on PATH (Debian: apt-get install -y redis-server)');
    return this.proc;
  }

  private async answersPing(): Promise<boolean> {
    try {
      return (await redisCommand(this.port, ['PING'], 500)) === 'PONG';
    } catch {
      return false;
    }
  }

  private clearResumeTimer(): void {
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.resumeTimer = undefined;
  }
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
