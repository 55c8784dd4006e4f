/**
 * The one place that chooses a session's backend, per request:
 *   admin override → Unleash flag `session-storage` → SESSION_STORAGE,
 * then, if this instance rolled back away from the result, the backend it rolled back to.
 * Every input is already in memory (the override and Unleash state are synced in the
 * background), so choosing costs no I/O.
 */
import type { BackendName } from '../config/config.js';
import type { SelectionSource } from '../metrics/metrics.js';
import { FLAG_NAME, type FlagOverride } from './override.js';
import type { UnleashRollout } from './unleash-flag.js';
import type { RollbackGuard } from './rollback.js';

/** What the flag needs from Unleash (see unleash-flag.ts). */
export interface UnleashSource {
  backendFor(handle: string): BackendName | undefined;
  rollout(): UnleashRollout | undefined;
  status(): object;
  close(): Promise<void>;
}

export interface Choice {
  backend: BackendName;
  source: SelectionSource;
}

export class BackendFlag {
  constructor(
    private readonly envBackend: BackendName,
    readonly override: FlagOverride,
    readonly rollback: RollbackGuard,
    readonly unleash?: UnleashSource,
  ) {}

  /** `handle` is the session's public handle: Unleash's stickiness key, stable across id rotation. */
  choose(handle: string): Choice {
    const base = this.resolve(handle);
    const backend = this.rollback.redirect(base.backend);
    // An automatic rollback acts as an override (describe() names it `rollback`): the metric
    // session_backend_selected_total takes only the sources API.md lists.
    return backend === base.backend ? base : { backend, source: 'override' };
  }

  /**
   * The flag as an operator sees it, for GET /api/admin/flags and /readyz. Unleash answers per
   * session, so its part is the backend it rolls out (`value`, when its variants name exactly
   * one) with the rollout in `unleash.flag`; sessions outside the rollout get `env`. `source` is
   * `unleash` only while Unleash assigns a backend to some sessions (flag on, a variant naming
   * a backend, a rollout above 0 %): with the flag off, absent, or no state yet, it is `env`.
   */
  describe() {
    const override = this.override.value;
    const rollback = this.rollback.state;
    const unleash = this.unleash?.status();
    const flag = this.unleash?.rollout();
    const unleashAssigns = !!flag && flag.enabled && flag.backends.length > 0 && (flag.strategies.length === 0 || flag.strategies.some((s) => s.rollout === undefined || s.rollout > 0));
    const fromUnleash = unleashAssigns && flag.backends.length === 1 ? flag.backends[0] : undefined;
    const value = override?.backend ?? fromUnleash ?? this.envBackend;
    return {
      name: FLAG_NAME,
      value: rollback ? this.rollback.redirect(value) : value,
      source: rollback ? 'rollback' : override ? 'override' : unleashAssigns ? 'unleash' : 'env',
      override: override ? { backend: override.backend, updatedAt: new Date(override.updatedAt).toISOString(), updatedBy: override.updatedBy } : null,
      unleash: unleash ? { configured: true, ...unleash, flag: flag ?? null } : { configured: false },
      env: this.envBackend,
      rollback: rollback
        ? { ...rollback, at: new Date(rollback.at).toISOString(), decidedHere: this.rollback.decidedHere }
        : null,
    };
  }

  private resolve(handle: string): Choice {
    const override = this.override.value;
    if (override) return { backend: override.backend, source: 'override' };
    const fromUnleash = this.unleash?.backendFor(handle);
    if (fromUnleash) return { backend: fromUnleash, source: 'unleash' };
    return { backend: this.envBackend, source: 'env' };
  }
}
