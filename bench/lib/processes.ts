/**
 * Child processes of the benchmark: spawned pinned to a CPU with taskset, output to a log
 * file (never a pipe that could fill and stall a server), all stopped at the end — SIGTERM,
 * then SIGKILL — and SIGKILLed by an exit hook if the runner dies first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

export interface Child {
  name: string;
  proc: ChildProcess;
  log: string;
  exited: Promise<number | null>;
}

const children = new Set<Child>();
let hooked = false;

function hook() {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });
}

/** Runs `command` under `taskset -c <cpu>`; stdout and stderr go to `log`. */
export function spawnPinned(name: string, cpu: string, command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; log: string }): Child {
  hook();
  const fd = openSync(opts.log, 'a');
  const proc = spawn('taskset', ['-c', cpu, command, ...args], { cwd: opts.cwd, env: opts.env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const child: Child = { name, proc, log: opts.log, exited };
  children.add(child);
  void exited.then(() => children.delete(child));
  return child;
}

export function lastLines(file: string, n = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

/** SIGTERM, and SIGKILL after `graceMs` if it is still there. */
export async function stop(child: Child, graceMs = 5000): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill('SIGTERM');
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
  await child.exited;
  clearTimeout(timer);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stop(c)));
}

/** Runs a pinned command to completion, killing it after `timeoutMs`. */
export async function runPinned(cpu: string, command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; log: string; timeoutMs: number }): Promise<number | null> {
  const child = spawnPinned(command, cpu, command, args, opts);
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), opts.timeoutMs);
  const code = await child.exited;
  clearTimeout(timer);
  return code;
}

/** utime + stime of a process (all its threads), in seconds. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

const CLK_TCK = 100;

/** Busy and total jiffies per CPU, from /proc/stat. */
export function cpuTimes(): Map<string, { busy: number; total: number }> {
  const out = new Map<string, { busy: number; total: number }>();
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = m[2]!.trim().split(/\s+/).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    out.set(m[1]!, { busy: total - idle, total });
  }
  return out;
}

export function cpuBusy(before: ReturnType<typeof cpuTimes>, after: ReturnType<typeof cpuTimes>, cpu: string): number {
  const a = before.get(cpu);
  const b = after.get(cpu);
  if (!a || !b || b.total === a.total) return NaN;
  return (b.busy - a.busy) / (b.total - a.total);
}

/**
 * A bench script's top level: runs `main`, prints a failure as one line (the message, not a
 * stack: the failures here are "wrk is not installed" or "the server did not start") with exit
 * code 1, and always runs `cleanup`, so that no server or Redis outlives the script.
 */
export async function runMain(main: () => Promise<void>, cleanup: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  } finally {
    await cleanup();
  }
}
