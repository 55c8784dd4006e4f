/** Everything the HTTP layer is given at start (built in app.ts); routes take what they need from here. */
import type { Logger } from 'pino';
import type { LoginLimiter } from '../auth/login-limiter.js';
import type { Config } from '../config/config.js';
import type { Models } from '../db/models.js';
import type { BackendFlag } from '../flags/backend-flag.js';
import type { Metrics } from '../metrics/metrics.js';
import type { SessionAudit } from '../sessions/audit.js';
import type { SessionBackends } from '../sessions/backends.js';

export interface AppDeps {
  config: Config;
  models: Models;
  backends: SessionBackends;
  flag: BackendFlag;
  metrics: Metrics;
  logger: Logger;
  audit: SessionAudit;
  limiter: LoginLimiter;
}
