/**
 * The load generator when wrk is not installed: autocannon in its own process, with the
 * same behaviour as load/sessions.lua (same environment variables, same JSON summary).
 * One Node process on one core generates less load than wrk: near the bare-Koa ceiling it
 * can be the bottleneck, which the runner reports (load-generator core utilisation).
 */
import autocannon from 'autocannon';
import { readFileSync, writeFileSync } from 'node:fs';

const url = process.argv[2]!;
const connections = Number(process.argv[3] ?? 50);
const duration = Number(process.argv[4] ?? 5);
const method = (process.env.BENCH_METHOD ?? 'GET') as 'GET';
const path = process.env.BENCH_PATH ?? '/';
const writing = process.env.BENCH_WRITE === '1';
const sessions = (process.env.BENCH_SESSIONS ? readFileSync(process.env.BENCH_SESSIONS, 'utf8') : '')
  .split('\n')
  .filter(Boolean)
  .map((line) => {
    const [cookie = '', csrf = ''] = line.split('\t');
    return { cookie, csrf };
  });
let idx = 0;
let counter = 0;

const result = await autocannon({
  url,
  connections,
  duration,
  requests: [
    {
      method,
      path,
      setupRequest: (req) => {
        const s = sessions.length ? sessions[idx++ % sessions.length]! : undefined;
        const headers: Record<string, string> = s ? { cookie: s.cookie } : {};
        if (!writing) return { ...req, headers };
        counter++;
        return {
          ...req,
          headers: { ...headers, 'x-csrf-token': s!.csrf, 'content-type': 'application/json' },
          body: JSON.stringify({ preferences: { counter } }),
        };
      },
    },
  ],
});
const us = (ms: number) => Math.round(ms * 1000);
const summary = {
  requests: result.requests.total,
  duration_us: us(result.duration * 1000),
  bytes: result.throughput.total,
  errors: { connect: 0, read: result.errors, write: 0, status: result.non2xx, timeout: result.timeouts },
  latency_us: {
    min: us(result.latency.min),
    mean: us(result.latency.mean),
    max: us(result.latency.max),
    stdev: us(result.latency.stddev),
    p50: us(result.latency.p50),
    p90: us(result.latency.p90),
    p99: us(result.latency.p99),
    p999: us(result.latency.p99_9),
  },
};
writeFileSync(process.env.BENCH_OUT!, JSON.stringify(summary));
