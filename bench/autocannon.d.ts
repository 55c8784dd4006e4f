/** autocannon ships no types and @types/autocannon is not installed: what load/autocannon-runner.ts uses. */
declare module 'autocannon' {
  interface RequestParams {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string;
  }
  interface Histogram {
    min: number;
    mean: number;
    max: number;
    stddev: number;
    p50: number;
    p90: number;
    p99: number;
    p99_9: number;
  }
  interface Result {
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    requests: { total: number };
    throughput: { total: number };
    latency: Histogram;
  }
  interface Options {
    url: string;
    connections?: number;
    duration?: number;
    requests?: Array<RequestParams & { setupRequest?: (req: RequestParams) => RequestParams }>;
  }
  function autocannon(options: Options): Promise<Result>;
  export default autocannon;
}
