/** `http_request_duration_seconds` by method, route *pattern* (never the raw path) and status. */
import type { Context, Next } from 'koa';
import type { Metrics } from '../metrics/metrics.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export function requestMetrics(metrics: Metrics) {
  return async function timeRequest(ctx: Context, next: Next) {
    const end = metrics.httpDuration.startTimer();
    try {
      await next();
    } finally {
      const route = (ctx as Context & { _matchedRoute?: string })._matchedRoute;
      end({ method: METHODS.has(ctx.method) ? ctx.method : 'OTHER', route: typeof route === 'string' ? route : 'unmatched', status: String(ctx.status) });
    }
  };
}
