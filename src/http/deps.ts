/** Everything the HTTP layer is given at start (built in app.ts); routes take what they need from here. */
import type { Logger } from 'pino';
import type { LoginLimiter } from '../auth/login-limiter.js';
import type { Config } from '../config/config.js';
import type { Models } from '../db/models.js';
import type { BackendFlag } from '../flags/backend-flag.js';
import type { Metrics } from '../metrics/metrics.js';
import type { SessionAudit } from '../sessions/audit.js';
import type { SessionBackends } from '../sessions/backends.js';

/** Where the instance is in its life: set by server.ts at SIGTERM; /readyz answers 503 `draining` from then on. */
export interface Lifecycle {
  draining: boolean;
}

export interface AppDeps {
  config: Config;
  models: Models;
  backends: SessionBackends;
  flag: BackendFlag;
  metrics: Metrics;
  logger: Logger;
  audit: SessionAudit;
  limiter: LoginLimiter;
  lifecycle: Lifecycle;
}
