/** Liveness, readiness and metrics. */
import Router from '@koa/router';
import type { AppDeps } from '../deps.js';

export function operationsRoutes({ backends, flag, metrics, config }: AppDeps) {
  const router = new Router();

  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });

  router.get('/readyz', async (ctx) => {
    const status = await backends.health();
    metrics.storeHealth(status);
    const described = flag.describe();
    const active = described.value;
    const fallback = config.sessions.fallback;
    const serving = status[active] === 'up' || (fallback !== 'none' && status[fallback] === 'up');
    // Degraded: serving, but without what keeps an outage from logging anyone out (the active
    // backend, or the fallback that holds the copies).
    const whole = status[active] === 'up' && (fallback === 'none' || status[fallback] !== 'down');
    ctx.status = serving ? 200 : 503;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      status: !serving ? 'unavailable' : whole ? 'ok' : 'degraded',
      active,
      source: described.source,
      fallback,
      rollback: described.rollback,
      backends: status,
    };
  });

  router.get('/metrics', async (ctx) => {
    ctx.set('Content-Type', metrics.registry.contentType);
    ctx.body = await metrics.registry.metrics();
  });

  return router;
}
