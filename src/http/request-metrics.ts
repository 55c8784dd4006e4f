/** `http_request_duration_seconds` by method, route *pattern* (never the raw path) and status. */
import type Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { Metrics } from '../metrics/metrics.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

interface RouteLayer {
  path: unknown;
  methods: string[];
}

/**
 * The pattern of the route a request was for. @koa/router leaves the layers whose path matched
 * in `ctx.matched`; a request refused before the router ran (CSRF, a body that does not parse)
 * is matched here, so that its error counts under its route rather than as `unmatched` (a
 * dashboard filtered on `/api/login` sees them too). `ctx._matchedRoute` is not used: a
 * router-level middleware that throws (the admin token check) leaves its own path there. A
 * wrong method is labelled with the path's route; only a path no route has is `unmatched`.
 */
function routeLabel(ctx: Context, router: Router): string {
  const layers = (ctx as Context & { matched?: RouteLayer[] }).matched ?? (router.match(ctx.path, ctx.method).path as RouteLayer[]);
  let label = 'unmatched';
  for (const layer of layers) {
    // Middleware layers (no methods) are not routes; the last route that takes the method wins,
    // as in the router, else the path's first route.
    if (layer.methods.length === 0 || typeof layer.path !== 'string') continue;
    if (layer.methods.includes(ctx.method)) label = layer.path;
    else if (label === 'unmatched') label = layer.path;
  }
  return label;
}

export function requestMetrics(metrics: Metrics, router: Router) {
  return async function timeRequest(ctx: Context, next: Next) {
    const started = performance.now();
    try {
      await next();
    } finally {
      metrics.httpRequest(METHODS.has(ctx.method) ? ctx.method : 'OTHER', routeLabel(ctx, router), ctx.status, (performance.now() - started) / 1000);
    }
  };
}
