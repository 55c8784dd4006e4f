/** Server-rendered pages for people in a browser. */
import Router from '@koa/router';
import type { AppDeps } from '../deps.js';

export function pageRoutes(_deps: AppDeps) {
  const router = new Router();
  return router;
}
