/** Liveness, readiness and metrics. */
import Router from '@koa/router';
import { BACKENDS, type BackendName } from '../../config/config.js';
import { isDisabled } from '../../sessions/disabled-store.js';
import type { AppDeps } from '../deps.js';

type BackendStatus = 'up' | 'down' | 'disabled';

export function operationsRoutes({ backends, flag, metrics, config }: AppDeps) {
  const router = new Router();

  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });

  router.get('/readyz', async (ctx) => {
    const entries = await Promise.all(
      BACKENDS.map(async (b): Promise<[BackendName, BackendStatus]> => {
        if (isDisabled(backends.stores[b])) return [b, 'disabled'];
        try {
          await backends.stores[b].ping();
          return [b, 'up'];
        } catch {
          return [b, 'down'];
        }
      }),
    );
    const status = Object.fromEntries(entries) as Record<BackendName, BackendStatus>;
    for (const [b, s] of entries) if (s !== 'disabled') metrics.storeUp.set({ backend: b }, s === 'up' ? 1 : 0);
    const described = flag.describe();
    const active = described.value;
    const fallback = config.sessions.fallback;
    const serving = status[active] === 'up' || (fallback !== 'none' && status[fallback] === 'up');
    ctx.status = serving ? 200 : 503;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      status: !serving ? 'unavailable' : status[active] === 'up' ? 'ok' : 'degraded',
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
