/** One load-generator run against one target and route: wrk (or autocannon), pinned, with CPU accounting. */
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { cpuBusy, cpuTimes, lastLines, processCpuSeconds, runPinned } from './processes.js';
import type { Route, RunningTarget } from './targets.js';

export type LoadGenerator = 'wrk' | 'autocannon';

export interface WrkSummary {
  requests: number;
  duration_us: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { min: number; mean: number; max: number; stdev: number; p50: number; p90: number; p99: number; p999: number };
}

export interface Sample extends WrkSummary {
  target: string;
  route: Route;
  round: number;
  rps: number;
  errorCount: number;
  /** Server process CPU time per request, µs (all its threads). */
  cpuUsPerRequest: number;
  /** Busy fraction of the server's CPU and of the load generator's CPU during the run (all processes). */
  serverCpuBusy: number;
  loadCpuBusy: number;
  /** The server process's own CPU time ÷ wall time: below ~0.95 it was not the only thing limiting throughput. */
  serverShare: number;
  /** 1-minute load average when the run ended (the machine may be shared). */
  loadAvg: number;
}

export interface LoadOptions {
  generator: LoadGenerator;
  root: string;
  tmp: string;
  serverCpu: string;
  loadCpu: string;
  connections: number;
}

export async function runLoad(o: LoadOptions, t: RunningTarget, sessionsFile: string, route: Route, seconds: number, round: number): Promise<Sample> {
  const spec = t.routes[route];
  const out = path.join(o.tmp, `out-${t.id}-${route}.json`);
  rmSync(out, { force: true });
  const env = {
    ...process.env,
    BENCH_METHOD: spec.method,
    BENCH_PATH: spec.path,
    BENCH_WRITE: spec.write ? '1' : '0',
    BENCH_SESSIONS: spec.session ? sessionsFile : '',
    BENCH_OUT: out,
  };
  const log = path.join(o.tmp, 'load.log');
  const [command, args] =
    o.generator === 'wrk'
      ? ['wrk', ['-t1', `-c${o.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', path.join(o.root, 'bench/load/sessions.lua'), t.base + spec.path]]
      : [process.execPath, ['--import', 'tsx', path.join(o.root, 'bench/load/autocannon-runner.ts'), t.base + spec.path, String(o.connections), String(seconds)]];
  const pid = t.child.proc.pid!;
  const cpu0 = processCpuSeconds(pid);
  const sys0 = cpuTimes();
  const wall0 = process.hrtime.bigint();
  const code = await runPinned(o.loadCpu, command, args as string[], { env, cwd: o.root, log, timeoutMs: (seconds + 30) * 1000 });
  const sys1 = cpuTimes();
  const cpu1 = processCpuSeconds(pid);
  const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
  let summary: WrkSummary;
  try {
    summary = JSON.parse(readFileSync(out, 'utf8')) as WrkSummary;
  } catch {
    throw new Error(`${o.generator} against ${t.id} ${route} gave no result (exit ${code}):\n${lastLines(log)}`);
  }
  const e = summary.errors;
  return {
    ...summary,
    target: t.id,
    route,
    round,
    rps: summary.requests / (summary.duration_us / 1e6),
    errorCount: e.connect + e.read + e.write + e.status + e.timeout,
    cpuUsPerRequest: ((cpu1 - cpu0) * 1e6) / Math.max(1, summary.requests),
    serverCpuBusy: cpuBusy(sys0, sys1, o.serverCpu),
    loadCpuBusy: cpuBusy(sys0, sys1, o.loadCpu),
    serverShare: (cpu1 - cpu0) / wall,
    loadAvg: Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]),
  };
}
