/**
 * Every metric Switchboard exports, on its own registry. Names and labels are part of the
 * contract (../shared/API.md): dashboards and alert rules depend on them.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { BACKENDS, type BackendName } from '../config/config.js';
import { LabelledCounter, LabelledHistogram, type CounterSeries, type HistogramSeries } from './series.js';

export const STORE_OPERATIONS = ['load', 'save', 'destroy', 'touch', 'list'] as const;
export type StoreOperation = (typeof STORE_OPERATIONS)[number];
export const OUTCOMES = ['success', 'error', 'timeout'] as const;
export type Outcome = (typeof OUTCOMES)[number];
export const SELECTION_SOURCES = ['override', 'unleash', 'env', 'fallback'] as const;
export type SelectionSource = (typeof SELECTION_SOURCES)[number];
export const ROLLBACK_TRIGGERS = ['error_rate', 'latency'] as const;
export type RollbackTrigger = (typeof ROLLBACK_TRIGGERS)[number];
export const LOGIN_OUTCOMES = ['success', 'failure', 'rate_limited', 'disabled'] as const;
/** The codes of requests answered before any route (http/client-errors.ts, the Host check). */
export const REFUSAL_CODES = ['bad_request', 'headers_too_large', 'request_timeout', 'method_not_allowed', 'expectation_failed'] as const;
export const REVOCATION_REASONS = ['logout', 'user', 'others', 'password_change', 'admin', 'disabled', 'revoke_all', 'limit'] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];
export const FALLBACK_REASONS = ['error', 'timeout', 'circuit_open'] as const;

// Store operations take 0.05–1 ms on loopback: the buckets start at 0.1 ms so p99 means something.
const STORE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

// prom-client names three gauges *_total, which promtool rejects (counter suffix on a gauge).
const REJECTED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class Metrics {
  readonly registry = new Registry();

  // The four metrics updated on every request are series.ts's (label sets resolved once);
  // the rest are prom-client's own.
  readonly storeDuration = new LabelledHistogram(
    'session_store_operation_duration_seconds',
    'Duration of session store operations',
    ['backend', 'operation'],
    this.registry,
    STORE_BUCKETS,
  );
  readonly storeOperations = new LabelledCounter('session_store_operations_total', 'Session store operations by outcome', ['backend', 'operation', 'outcome'], this.registry);
  readonly fallbacks = new Counter({
    name: 'session_store_fallbacks_total',
    help: 'Store operations served by the fallback backend instead of the chosen one',
    labelNames: ['from', 'to', 'reason'] as const,
    registers: [this.registry],
  });
  readonly migrations = new Counter({
    name: 'session_migrations_total',
    help: 'Sessions moved from one backend to another while being served',
    labelNames: ['from', 'to'] as const,
    registers: [this.registry],
  });
  readonly backendSelected = new LabelledCounter(
    'session_backend_selected_total',
    'Backend chosen for a request, by where the choice came from',
    ['backend', 'source'],
    this.registry,
  );
  readonly storeUp = new Gauge({
    name: 'session_store_up',
    help: '1 when the backend can serve (circuit closed, probe answered; on a Redis Cluster by every master serving slots), 0 when not',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly rollbacks = new Counter({
    name: 'session_rollbacks_total',
    help: 'Automatic rollbacks of the session backend',
    labelNames: ['from', 'to', 'trigger'] as const,
    registers: [this.registry],
  });
  readonly logins = new Counter({
    name: 'auth_logins_total',
    help: 'Login attempts by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly revocations = new Counter({
    name: 'session_revocations_total',
    help: 'Sessions ended before their expiry, by reason (revoke_all: the live sessions the sessions table counted when it ended them all at once)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly refusedRequests = new Counter({
    name: 'http_requests_refused_total',
    help: 'Requests answered before any route, by error code: refused by the HTTP parser (bad_request, headers_too_large), timed out before their headers and body were in (request_timeout), CONNECT, an unknown Expect, HTTP/1.1 without Host',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new LabelledHistogram(
    'http_request_duration_seconds',
    'HTTP request duration by route pattern',
    ['method', 'route', 'status'],
    this.registry,
    HTTP_BUCKETS,
  );

  // Every store and selection series exists from the start (at 0: a counter that first appears
  // at 1 is invisible to increase()), resolved here once; the request path only indexes them.
  private readonly storeSeries = {} as Record<BackendName, Record<StoreOperation, { duration: HistogramSeries; outcomes: Record<Outcome, CounterSeries> }>>;
  private readonly selectedSeries = {} as Record<BackendName, Record<SelectionSource, CounterSeries>>;
  /** Keyed by method, status and route: a handful of routes times a handful of statuses. */
  private readonly httpSeries = new Map<string, HistogramSeries>();

  /** One store operation: its duration and its outcome. */
  storeOperation(backend: BackendName, operation: StoreOperation, outcome: Outcome, seconds: number) {
    const series = this.storeSeries[backend][operation];
    series.duration.observe(seconds);
    series.outcomes[outcome].inc();
  }

  /** An operation counted but not timed (a database copy written behind: core.ts). */
  storeOutcome(backend: BackendName, operation: StoreOperation, outcome: Outcome) {
    this.storeSeries[backend][operation].outcomes[outcome].inc();
  }

  /** A request's session was served by `backend`, chosen by `source`. */
  selected(backend: BackendName, source: SelectionSource) {
    this.selectedSeries[backend][source].inc();
  }

  /** One HTTP request; `route` is the route pattern (or 'unmatched'), never the raw path. */
  httpRequest(method: string, route: string, status: number, seconds: number) {
    const key = `${method} ${status} ${route}`;
    let series = this.httpSeries.get(key);
    if (!series) {
      series = this.httpDuration.series({ method, route, status: String(status) });
      this.httpSeries.set(key, series);
    }
    series.observe(seconds);
  }

  constructor(options: { defaultMetrics?: boolean; disabledBackends?: readonly BackendName[] } = {}) {
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry });
      for (const name of REJECTED_DEFAULTS) this.registry.removeSingleMetric(name);
    }
    // A counter that first appears at 1 is invisible to increase(): start every known series at 0.
    for (const backend of BACKENDS) {
      this.storeSeries[backend] = {} as (typeof this.storeSeries)[BackendName];
      for (const operation of STORE_OPERATIONS) {
        const outcomes = {} as Record<Outcome, CounterSeries>;
        for (const outcome of OUTCOMES) outcomes[outcome] = this.storeOperations.series({ backend, operation, outcome });
        this.storeSeries[backend][operation] = { duration: this.storeDuration.series({ backend, operation }), outcomes };
      }
      this.selectedSeries[backend] = {} as Record<SelectionSource, CounterSeries>;
      for (const source of SELECTION_SOURCES) this.selectedSeries[backend][source] = this.backendSelected.series({ backend, source });
      // A backend switched off has no `up` series: it is not down, and must not page anyone.
      if (!options.disabledBackends?.includes(backend)) this.storeUp.set({ backend }, 1);
      for (const to of BACKENDS) {
        if (to === backend) continue;
        this.migrations.inc({ from: backend, to }, 0);
        for (const reason of FALLBACK_REASONS) this.fallbacks.inc({ from: backend, to, reason }, 0);
        for (const trigger of ROLLBACK_TRIGGERS) this.rollbacks.inc({ from: backend, to, trigger }, 0);
      }
    }
    for (const outcome of LOGIN_OUTCOMES) this.logins.inc({ outcome }, 0);
    for (const reason of REVOCATION_REASONS) this.revocations.inc({ reason }, 0);
    for (const code of REFUSAL_CODES) this.refusedRequests.inc({ code }, 0);
  }

  /**
   * Unleash's state, read at each scrape, for the instances that use it: whether its server
   * answered the last poll, and when one last did. Without them a frozen or stale rollout (a
   * refused token, Unleash down during a rollout step) showed only in `GET /api/admin/flags`.
   */
  watchUnleash(status: () => { reachable: boolean; lastSyncAt?: string }): void {
    new Gauge({
      name: 'unleash_up',
      help: '1 when the Unleash server answered the last poll for the session-storage flag, 0 when not (the flag is then served from the last state the SDK holds)',
      registers: [this.registry],
      collect() {
        this.set(status().reachable ? 1 : 0);
      },
    });
    new Gauge({
      name: 'unleash_last_sync_timestamp_seconds',
      help: 'When the Unleash server last answered a poll (Unix time; 0 if it never has since start)',
      registers: [this.registry],
      collect() {
        const at = status().lastSyncAt;
        this.set(at ? Date.parse(at) / 1000 : 0);
      },
    });
  }

  /** `session_store_up` as a probe found the backends (a disabled one has no series). */
  storeHealth(health: Readonly<Record<BackendName, 'up' | 'down' | 'read_only' | 'disabled'>>): void {
    for (const backend of BACKENDS) if (health[backend] !== 'disabled') this.storeUp.set({ backend }, health[backend] === 'up' ? 1 : 0);
  }
}
