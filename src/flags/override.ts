/**
 * The admin override of the session-storage flag, persisted in the database so that every
 * instance sharing it applies it: set here at once, elsewhere within one poll interval.
 * Clearing keeps the row (value '') with a new time, so every instance also sees *that* an
 * operator acted — which is what ends an automatic rollback everywhere (`onOperatorChange`).
 */
import { BACKENDS, type BackendName } from '../config/config.js';
import type { Models } from '../db/models.js';

export const FLAG_NAME = 'session-storage';

export interface OverrideState {
  backend: BackendName;
  updatedAt: number;
  updatedBy: string;
}

export class FlagOverride {
  private current: OverrideState | undefined;
  private lastChangeAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly models: Models,
    private readonly options: { syncIntervalMs: number; onSyncError?: (err: unknown) => void; onOperatorChange?: () => void },
  ) {}

  async start(): Promise<void> {
    await this.sync();
    this.timer = setInterval(() => this.sync().catch((err: unknown) => this.options.onSyncError?.(err)), this.options.syncIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  get value(): OverrideState | undefined {
    return this.current;
  }

  async set(backend: BackendName, updatedBy: string): Promise<OverrideState> {
    const state = { backend, updatedAt: Date.now(), updatedBy };
    await this.write(backend, updatedBy, state.updatedAt);
    this.current = state;
    return state;
  }

  async clear(updatedBy = 'admin'): Promise<void> {
    await this.write('', updatedBy, Date.now());
    this.current = undefined;
  }

  async sync(): Promise<void> {
    const row = await this.models.FlagOverride.findByPk(FLAG_NAME);
    this.current =
      row && (BACKENDS as readonly string[]).includes(row.value)
        ? { backend: row.value as BackendName, updatedAt: row.updatedAt, updatedBy: row.updatedBy }
        : undefined;
    const changeAt = row?.updatedAt;
    if (this.lastChangeAt !== undefined && changeAt !== undefined && changeAt !== this.lastChangeAt) this.options.onOperatorChange?.();
    this.lastChangeAt = changeAt ?? this.lastChangeAt ?? 0;
  }

  private async write(value: string, updatedBy: string, updatedAt: number) {
    await this.models.FlagOverride.upsert({ name: FLAG_NAME, value, updatedBy, updatedAt });
    this.lastChangeAt = updatedAt;
    this.options.onOperatorChange?.();
  }
}
