/** `http_request_duration_seconds` by method, route *pattern* (never the raw path) and status. */
import type { Context, Next } from 'koa';
import type { Metrics } from '../metrics/metrics.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export function requestMetrics(metrics: Metrics) {
  return async function timeRequest(ctx: Context, next: Next) {
    const started = performance.now();
    try {
      await next();
    } finally {
      const route = (ctx as Context & { _matchedRoute?: string })._matchedRoute;
      metrics.httpRequest(METHODS.has(ctx.method) ? ctx.method : 'OTHER', typeof route === 'string' ? route : 'unmatched', ctx.status, (performance.now() - started) / 1000);
    }
  };
}
