/** Liveness, readiness and metrics. */
import Router from '@koa/router';
import type { BackendName } from '../../config/config.js';
import type { AppDeps } from '../deps.js';

export function operationsRoutes({ backends, flag, metrics, config, lifecycle }: AppDeps) {
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
    // A backend that reads but takes no writes (a full disk) still serves the sessions it holds:
    // not a reason for a load balancer to take every instance out. It is `down` (it cannot do
    // all it must), and the instance `degraded`.
    const serves = (b: BackendName) => status[b] === 'up' || status[b] === 'read_only';
    const serving = serves(active) || (fallback !== 'none' && serves(fallback));
    // Degraded: serving, but without what keeps an outage from logging anyone out (the active
    // backend, or the fallback that holds the copies).
    const whole = status[active] === 'up' && (fallback === 'none' || status[fallback] === 'up' || status[fallback] === 'disabled');
    const shown = Object.fromEntries(Object.entries(status).map(([b, h]) => [b, h === 'read_only' ? 'down' : h]));
    // Stopping (SIGTERM): still serving for SHUTDOWN_DELAY_MS, but a load balancer should send
    // nothing more here.
    ctx.status = serving && !lifecycle.draining ? 200 : 503;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      status: lifecycle.draining ? 'draining' : !serving ? 'unavailable' : whole ? 'ok' : 'degraded',
      active,
      source: described.source,
      fallback,
      rollback: described.rollback,
      backends: shown,
    };
  });

  router.get('/metrics', async (ctx) => {
    ctx.set('Content-Type', metrics.registry.contentType);
    ctx.body = await metrics.registry.metrics();
  });

  return router;
}
