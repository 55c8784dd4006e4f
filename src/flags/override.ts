/**
 * The admin override of the session-storage flag, persisted in the database so that every
 * instance sharing it applies it: set here at once, elsewhere within one poll interval — or at
 * once there too when Redis carries the news (sessions/instance-channel.ts).
 * Clearing keeps the row (value '') with a new time, so every instance also sees *that* an
 * operator acted — which is what ends an automatic rollback everywhere (`onOperatorChange`).
 */
import { BACKENDS, type BackendName } from '../config/config.js';
import type { Models } from '../db/models.js';
import type { InstanceChannel } from '../sessions/instance-channel.js';

export const FLAG_NAME = 'session-storage';

/** The channel topic changes are announced on. */
const TOPIC = 'flag-override';

export interface OverrideState {
  backend: BackendName;
  updatedAt: number;
  updatedBy: string;
}

/** The row as stored and as announced: `value` is a backend, or '' once cleared. */
interface OverrideRow {
  value: string;
  updatedAt: number;
  updatedBy: string;
}

function isRow(message: unknown): message is OverrideRow {
  const m = message as Partial<OverrideRow> | null;
  return typeof m === 'object' && m !== null && typeof m.value === 'string' && Number.isFinite(m.updatedAt) && typeof m.updatedBy === 'string';
}

export class FlagOverride {
  private current: OverrideState | undefined;
  private lastChangeAt: number | undefined;
  /** Bumped by every change made or heard here, so that a poll read before it cannot undo it. */
  private generation = 0;
  private timer: NodeJS.Timeout | undefined;
  private channel: InstanceChannel | undefined;

  constructor(
    private readonly models: Models,
    private readonly options: { syncIntervalMs: number; onSyncError?: (err: unknown) => void; onOperatorChange?: () => void },
  ) {}

  private polling: Promise<void> | undefined;

  async start(): Promise<void> {
    await this.sync();
    this.timer = setInterval(() => {
      this.polling = this.sync().catch((err: unknown) => this.options.onSyncError?.(err));
    }, this.options.syncIntervalMs);
    this.timer.unref();
  }

  /** Stops polling; settles once a poll in flight has finished (before its database closes). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.polling;
  }

  /**
   * From now on, changes made here are announced on `channel`, and changes another instance
   * announces there are applied here at once, ahead of the poll. Settles once the channel is
   * subscribed (InstanceChannel.listen).
   */
  announceOn(channel: InstanceChannel): Promise<void> {
    this.channel = channel;
    return channel.listen(TOPIC, (message) => {
      if (!isRow(message) || message.updatedAt === this.lastChangeAt) return; // our own, or already polled
      this.generation++;
      this.adopt(message);
    });
  }

  get value(): OverrideState | undefined {
    return this.current;
  }

  async set(backend: BackendName, updatedBy: string): Promise<OverrideState> {
    await this.write({ value: backend, updatedAt: Date.now(), updatedBy });
    return this.current as OverrideState;
  }

  async clear(updatedBy = 'admin'): Promise<void> {
    await this.write({ value: '', updatedAt: Date.now(), updatedBy });
  }

  async sync(): Promise<void> {
    const generation = this.generation;
    const row = await this.models.FlagOverride.findByPk(FLAG_NAME);
    if (generation !== this.generation) return;
    if (row) this.adopt(row);
    else this.lastChangeAt ??= 0; // never set: the first row to appear is an operator's change
  }

  /** Takes `row` as the current state; a row with a new time means an operator acted. */
  private adopt(row: OverrideRow) {
    this.current = (BACKENDS as readonly string[]).includes(row.value) ? { backend: row.value as BackendName, updatedAt: row.updatedAt, updatedBy: row.updatedBy } : undefined;
    if (this.lastChangeAt !== undefined && row.updatedAt !== this.lastChangeAt) this.options.onOperatorChange?.();
    this.lastChangeAt = row.updatedAt;
  }

  private async write(row: OverrideRow) {
    await this.models.FlagOverride.upsert({ name: FLAG_NAME, ...row });
    this.generation++;
    this.lastChangeAt = row.updatedAt;
    this.adopt(row);
    this.options.onOperatorChange?.();
    await this.channel?.publish(TOPIC, row);
  }
}
