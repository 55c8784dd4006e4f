/**
 * The Unleash side of the SESSION_STORAGE flag: an unleash-client instance polling the
 * `session-storage` flag, evaluated locally per session.
 *
 * Facts about unleash-client 6.x this relies on (see node_modules/unleash-client/lib):
 * - `await startUnleash()` / `start()` waits for the first sync forever when the server is
 *   down, so the SDK starts itself (autostart) and nothing here waits on it.
 * - Evaluation is local. Before the SDK has any state, `getVariant` answers a fallback and
 *   emits a warning per call, so `backendFor` checks for state first.
 * - `synchronized` and `ready` also fire for a backup file or bootstrap: only `changed` /
 *   `unchanged` (a 200 or 304 from the server) prove the server answered.
 * - On 401/403 the SDK stops polling for good (its polling fetcher sets no next timer). A
 *   refusal is often passing (a token cache, a proxy or Unleash itself restarting), so polling
 *   is started again here after a backoff (`resumeAfterRefusal`), through the repository's
 *   `fetch()`, which arms the next poll as any poll does.
 * - A failed write of the file backup is emitted as `error` too, after a poll that succeeded.
 * - `destroy()` removes all listeners from the internal repository; a poll still in flight
 *   that then fails emits `'error'` with no listener, which throws inside the SDK's promise
 *   (an unhandled rejection that ends the process). `close()` re-attaches a listener.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { Unleash, UnleashEvents } from 'unleash-client';
import { BACKENDS, type BackendName } from '../config/config.js';
import { makeDirectory } from '../config/make-directory.js';
import { withoutPassword } from '../logging/url-password.js';
import { FLAG_NAME } from './override.js';

export interface UnleashFlagOptions {
  /** The Unleash API URL, e.g. http://127.0.0.1:4242/api. */
  url: string;
  /** A client/backend API token; sent as the Authorization header, never logged. */
  token?: string;
  appName: string;
  /** How often the SDK polls for flag changes. */
  refreshIntervalMs: number;
  /** Directory for the SDK's file backup (created if missing): serves the last state when the server is down at start. */
  backupPath: string;
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

export interface UnleashFlagStatus {
  configured: true;
  /** The last poll got an answer from the server (true only after one did). */
  reachable: boolean;
  /** The SDK holds a flag state (from the server or the backup file). */
  hasState: boolean;
  /** When the server last answered (ISO 8601). */
  lastSyncAt?: string;
  /** The last error the SDK reported, cleared when the server answers again. */
  lastError?: string;
}

/** The variant payload's value names the backend if it is one; otherwise the variant name does. */
export function backendOfVariant(variant: { name?: string; enabled?: boolean; payload?: { value?: unknown } }): BackendName | undefined {
  if (!variant.enabled) return undefined;
  return asBackend(variant.payload?.value) ?? asBackend(variant.name);
}

function asBackend(value: unknown): BackendName | undefined {
  if (typeof value !== 'string') return undefined;
  const name = value.trim().toLowerCase();
  return (BACKENDS as readonly string[]).includes(name) ? (name as BackendName) : undefined;
}

/**
 * The flag as the SDK holds it, for operators: on or off, each strategy's rollout percentage
 * (`rollout` of flexibleRollout, `percentage` of the older gradual rollouts; absent for a
 * strategy without one), and the backends its variants name.
 */
export interface UnleashRollout {
  enabled: boolean;
  strategies: Array<{ name: string; rollout?: number }>;
  backends: BackendName[];
  /** Variants that name no backend (a typo, `memcached`): the sessions they get stay where the environment says. Absent when none. */
  ignoredVariants?: string[];
}

type FlagDefinition = NonNullable<ReturnType<Unleash['getFeatureToggleDefinition']>>;

/** Variants live on the flag (older servers) or on each strategy (Unleash 5 and later). */
function variantsOf(flag: FlagDefinition) {
  return [...(flag.variants ?? []), ...(flag.strategies ?? []).flatMap((s) => s.variants ?? [])];
}

function ignoredVariantsOf(flag: FlagDefinition): string[] {
  const names = variantsOf(flag)
    .filter((v) => backendOfVariant({ ...v, enabled: true }) === undefined)
    .map((v) => String(v.name));
  return [...new Set(names)];
}

function percentageOf(parameters: Record<string, unknown> | undefined): number | undefined {
  const value = Number(parameters?.rollout ?? parameters?.percentage);
  return Number.isFinite(value) ? value : undefined;
}

/** What the SDK said, for the log and `status()`: its messages quote the URL, which may hold a password. */
function messageOf(err: unknown): string {
  return withoutPassword(err instanceof Error ? err.message : String(err));
}

/** The longest wait before polling again after the server refused the token. */
const MAX_REFUSAL_BACKOFF_MS = 5 * 60_000;

export class UnleashBackendFlag {
  static readonly FLAG = FLAG_NAME;

  private readonly unleash: Unleash;
  private readonly logger?: UnleashFlagOptions['logger'];
  /** The ignored variants last warned of (see `sayWhatChanged`). */
  private ignoredVariantsSaid = '';
  private ready = false;
  private reachable = false;
  private lastSyncAt?: Date;
  private lastError?: string;
  private closed = false;
  private readonly refreshIntervalMs: number;
  private readonly backupPath: string;
  /** Refusals (401/403) in a row, and the timer that polls again after the last. */
  private refusals = 0;
  private resumeTimer?: NodeJS.Timeout;
  /** Whether the last state had the flag (undefined before any state: see `sayWhatChanged`). */
  private flagPresent?: boolean;
  /** The backup-write failure last warned of (see `backupNotWritten`). */
  private backupProblemSaid?: string;
  /**
   * handle → backend, as the SDK last answered. An answer depends only on the handle and the
   * SDK's state (the context carries nothing else), so it is kept until the SDK polls again:
   * evaluating the rollout costs two murmur3 hashes and the context enrichment per call,
   * the largest part of choosing a backend. Cleared on every poll, changed or not, so a
   * time-based constraint is no staler than the SDK's own refresh interval.
   */
  private readonly answers = new Map<string, BackendName | undefined>();
  private static readonly MAX_ANSWERS = 100_000;

  /** Starts polling in the background; never waits for, nor throws on, an unreachable server. */
  constructor(opts: UnleashFlagOptions) {
    this.logger = opts.logger;
    this.refreshIntervalMs = opts.refreshIntervalMs;
    // As the SDK's own path.join makes its file's path, to recognise errors about that file.
    this.backupPath = path.join(opts.backupPath);
    try {
      makeDirectory(opts.backupPath);
    } catch (err) {
      // Without the directory every successful poll would also report a failed backup write.
      this.logger?.warn({ backupPath: opts.backupPath, err: messageOf(err) }, 'Unleash backup directory not usable');
    }
    this.unleash = new Unleash({
      url: opts.url,
      appName: opts.appName,
      refreshInterval: opts.refreshIntervalMs,
      backupPath: opts.backupPath,
      customHeaders: opts.token ? { Authorization: opts.token } : undefined,
      // Usage metrics are of no use to us and would be one more request per interval.
      disableMetrics: true,
      // Tests (and a restarting app) create more than 10 instances in one process.
      skipInstanceCountWarning: true,
    });
    this.unleash.on(UnleashEvents.Ready, () => {
      this.ready = true;
      this.answers.clear();
      this.sayWhatChanged();
    });
    this.unleash.on(UnleashEvents.Synchronized, () => this.answers.clear());
    this.unleash.on(UnleashEvents.Changed, () => {
      this.answered();
      this.sayWhatChanged();
    });
    this.unleash.on(UnleashEvents.Unchanged, () => this.answered());
    this.unleash.on(UnleashEvents.Error, (err: unknown) => this.failed(err));
    this.unleash.on(UnleashEvents.Warn, (msg: unknown) => {
      // A 404, 429 or 5xx answer is only a warning to the SDK ("<url> responded 503. Backing
      // off"), as is a connection reset ("Socket keep alive error, retrying in …", every poll
      // while a proxy resets them), but the poll brought no state: a failure, not reachable.
      if (/ responded .*Backing off|^Socket keep alive error/.test(messageOf(msg))) this.failed(msg);
      else this.logger?.warn({ flag: UnleashBackendFlag.FLAG, warning: messageOf(msg) }, 'Unleash warning');
    });
  }

  /**
   * The backend the flag assigns to the session with this handle (Unleash context
   * `sessionId`), or undefined when the flag is unknown or disabled, the session is outside
   * the rollout, the SDK has no state yet, or the variant names no backend. Local, no I/O.
   */
  backendFor(handle: string): BackendName | undefined {
    if (!this.ready || this.closed) return undefined;
    if (this.answers.has(handle)) return this.answers.get(handle);
    let backend: BackendName | undefined;
    try {
      backend = backendOfVariant(this.unleash.getVariant(UnleashBackendFlag.FLAG, { sessionId: handle }));
    } catch {
      // A flag must never break a request: a state the SDK cannot evaluate assigns nothing.
      backend = undefined;
    }
    if (this.answers.size >= UnleashBackendFlag.MAX_ANSWERS) this.answers.clear();
    this.answers.set(handle, backend);
    return backend;
  }

  /** Undefined while the SDK has no state, or holds no `session-storage` flag. */
  rollout(): UnleashRollout | undefined {
    if (!this.ready || this.closed) return undefined;
    const flag = this.unleash.getFeatureToggleDefinition(UnleashBackendFlag.FLAG);
    if (!flag) return undefined;
    const strategies = flag.strategies ?? [];
    const backends = new Set<BackendName>();
    for (const v of variantsOf(flag)) {
      const backend = backendOfVariant({ ...v, enabled: true });
      if (backend) backends.add(backend);
    }
    const ignoredVariants = ignoredVariantsOf(flag);
    return {
      enabled: flag.enabled,
      strategies: strategies.map((s) => {
        const rollout = percentageOf(s.parameters as Record<string, unknown> | undefined);
        return rollout === undefined ? { name: s.name } : { name: s.name, rollout };
      }),
      backends: [...backends],
      ...(ignoredVariants.length > 0 ? { ignoredVariants } : {}),
    };
  }

  /**
   * What an operator would otherwise not see in the log, said once per change of the flag, not
   * per request: the flag gone from Unleash (archived, deleted, or moved to another project:
   * every session goes to the environment's backend) or back, and a variant naming no backend
   * (a typo: its sessions simply stay where they are).
   */
  private sayWhatChanged(): void {
    const flag = this.unleash.getFeatureToggleDefinition(UnleashBackendFlag.FLAG);
    if (this.flagPresent !== undefined && this.flagPresent !== Boolean(flag)) {
      if (flag) this.logger?.info({ flag: UnleashBackendFlag.FLAG }, 'Unleash has the session-storage flag again: it chooses the sessions’ backend');
      else this.logger?.warn({ flag: UnleashBackendFlag.FLAG }, 'Unleash no longer has the session-storage flag (archived, deleted or in another project): every session goes to the backend the environment names');
    }
    this.flagPresent = Boolean(flag);
    const ignored = flag ? ignoredVariantsOf(flag) : [];
    const key = ignored.join('\n');
    if (key === this.ignoredVariantsSaid) return;
    this.ignoredVariantsSaid = key;
    if (ignored.length > 0) {
      this.logger?.warn({ flag: UnleashBackendFlag.FLAG, variants: ignored }, 'Unleash variants name no session backend (cookie, database or redis): the sessions they get stay on the backend the environment names');
    }
  }

  status(): UnleashFlagStatus {
    return {
      configured: true,
      reachable: this.reachable,
      hasState: this.ready,
      ...(this.lastSyncAt ? { lastSyncAt: this.lastSyncAt.toISOString() } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  /** Stops polling. Safe to call more than once and while a poll is in flight. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.resumeTimer);
    this.unleash.destroy();
    // destroy() stripped the repository's listeners; a poll in flight may still emit 'error'.
    const repository = (this.unleash as unknown as { repository?: unknown }).repository;
    if (repository instanceof EventEmitter) {
      repository.on(UnleashEvents.Error, (err: unknown) => {
        this.logger?.info({ flag: UnleashBackendFlag.FLAG, err: messageOf(err) }, 'Unleash poll failed after close');
      });
    }
  }

  private answered(): void {
    this.refusals = 0;
    this.answers.clear();
    this.lastSyncAt = new Date();
    this.lastError = undefined;
    if (!this.reachable) this.logger?.info({ flag: UnleashBackendFlag.FLAG }, 'Unleash server reachable');
    this.reachable = true;
  }

  private failed(err: unknown): void {
    if (this.backupNotWritten(err)) return;
    const message = messageOf(err);
    if (/Stopping refresh of toggles/.test(message)) this.resumeAfterRefusal();
    // Log a change of state or of cause, not every failed poll while the server is down.
    if (this.reachable || message !== this.lastError) {
      this.logger?.warn({ flag: UnleashBackendFlag.FLAG, err: message, hasState: this.ready }, 'Unleash unreachable or failing');
    }
    this.reachable = false;
    this.lastError = message;
  }

  /**
   * The server refused the token (401/403) and the SDK stopped polling. Polls again after 10
   * refresh intervals, doubling to at most 5 minutes while it keeps refusing: a fixed or
   * restored token is followed without a restart, and a revoked one costs a request every
   * 5 minutes (the refusal is logged once, as any failure that does not change).
   */
  private resumeAfterRefusal(): void {
    if (this.closed) return;
    const delay = Math.min(this.refreshIntervalMs * 10 * 2 ** this.refusals, MAX_REFUSAL_BACKOFF_MS);
    this.refusals++;
    clearTimeout(this.resumeTimer);
    this.resumeTimer = setTimeout(() => {
      const repository = (this.unleash as unknown as { repository?: { fetch?: () => Promise<void> } }).repository;
      void repository?.fetch?.().catch((e: unknown) => this.failed(e));
    }, delay);
    this.resumeTimer.unref();
  }

  /**
   * A failure to write the file backup (DATA_DIR not writable, full, or not a directory): the
   * poll before it succeeded, so the server is reachable and the state current. Said once per
   * cause, not with every poll that brings a change (every poll, behind a proxy that drops ETags).
   */
  private backupNotWritten(err: unknown): boolean {
    const { code, path: file } = (err ?? {}) as { code?: unknown; path?: unknown };
    if (typeof code !== 'string' || typeof file !== 'string' || !file.startsWith(this.backupPath)) return false;
    if (this.backupProblemSaid !== code) {
      this.backupProblemSaid = code;
      this.logger?.warn({ flag: UnleashBackendFlag.FLAG, backupPath: this.backupPath, err: code }, 'Unleash backup not written: a restart while Unleash is down starts without the last flag state');
    }
    return true;
  }
}
