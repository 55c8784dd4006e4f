/**
 * The admin override of the session-storage flag, persisted in the database so that every
 * instance sharing it applies it: set here at once, elsewhere within one poll interval — or at
 * once there too when Redis carries the news (sessions/instance-channel.ts).
 * Clearing keeps the row (value '') with a new time, so every instance also sees *that* an
 * operator acted — which is what ends an automatic rollback everywhere (`onOperatorChange`).
 *
 * An automatic rollback is shared the same way (its own row, `session-storage:rollback`): one
 * instance decides it, every other follows. Behind a load balancer, instances that disagree
 * move a session back and forth on every request that lands on the other one.
 */
import { BACKENDS, type BackendName } from '../config/config.js';
import type { Models } from '../db/models.js';
import type { InstanceChannel } from '../sessions/instance-channel.js';
import type { RollbackState } from './rollback.js';

export const FLAG_NAME = 'session-storage';

/** The channel topic changes are announced on. */
const TOPIC = 'flag-override';
/** The row, and the topic, of the automatic rollback in force ('' once an operator acted). */
const ROLLBACK = `${FLAG_NAME}:rollback`;
const ROLLBACK_TOPIC = 'flag-rollback';

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

/**
 * The rollback row: `value` names the move ({from, to, trigger}, JSON within the column's 64
 * characters); `updatedBy` says which operator change it was decided under (`basedOn`: that
 * change's time, the override row's `updatedAt` — 0 before any), then the deciding instance's
 * measurements: "basedOn errorRatio p99 baseline".
 */
function rollbackRow(state: RollbackState, basedOn: number): OverrideRow {
  const measured = [state.errorRatio, state.p99Seconds, state.baselineP99Seconds].map((n) => Number(n.toPrecision(6)));
  return { value: JSON.stringify({ from: state.from, to: state.to, trigger: state.trigger }), updatedAt: state.at, updatedBy: [basedOn, ...measured].join(' ') };
}

function rollbackOf(row: OverrideRow): { state: RollbackState; basedOn: number } | undefined {
  if (row.value === '') return undefined;
  try {
    const { from, to, trigger } = JSON.parse(row.value) as Partial<RollbackState>;
    const backends = BACKENDS as readonly unknown[];
    if (!backends.includes(from) || !backends.includes(to) || (trigger !== 'error_rate' && trigger !== 'latency')) return undefined;
    const [basedOn, errorRatio = 0, p99Seconds = 0, baselineP99Seconds = 0] = row.updatedBy.split(' ').map(Number);
    if (!Number.isFinite(basedOn)) return undefined;
    return { state: { from: from as BackendName, to: to as BackendName, trigger, at: row.updatedAt, errorRatio, p99Seconds, baselineP99Seconds }, basedOn: basedOn as number };
  } catch {
    return undefined; // a row this release cannot read: no rollback to follow
  }
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
    private readonly options: {
      syncIntervalMs: number;
      onSyncError?: (err: unknown) => void;
      onOperatorChange?: () => void;
      /** The automatic rollback in force, decided here or by another instance; on every poll while it holds. */
      onRollback?: (state: RollbackState) => void;
    },
  ) {}

  private polling: Promise<void> | undefined;

  async start(): Promise<void> {
    await this.sync();
    this.timer = setInterval(() => {
      // One poll at a time, as the revocation list's: a poll the database holds (a lock on
      // flag_overrides or settings, a stalled server) was joined by another every interval, each
      // on a pooled connection of its own, until all 10 were waiting on it and every session
      // request got 503 (a `LOCK TABLE flag_overrides` held for 10 s took the service down).
      if (this.polling) return;
      this.polling = this.sync()
        .catch((err: unknown) => this.options.onSyncError?.(err))
        .finally(() => {
          this.polling = undefined;
        });
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
  async announceOn(channel: InstanceChannel): Promise<void> {
    this.channel = channel;
    await Promise.all([
      channel.listen(TOPIC, (message) => {
        // Our own, already polled, or older than the change in force: a PUBLISH held up on a
        // stalled node (a Cluster master paused) is delivered after later ones, and undid them.
        if (!isRow(message) || (this.lastChangeAt !== undefined && message.updatedAt <= this.lastChangeAt)) return;
        this.generation++;
        this.adopt(message);
      }),
      channel.listen(ROLLBACK_TOPIC, (message) => {
        if (isRow(message)) this.follow(message);
      }),
    ]);
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

  /**
   * The operator change in force here: its time (the override row's `updatedAt`), 0 before any.
   * A rollback decided under it is shared with it (`shareRollback`).
   */
  get epoch(): number {
    return this.lastChangeAt ?? 0;
  }

  /**
   * Every instance that hears of it follows this automatic rollback, decided under the operator
   * change `basedOn` (`epoch` when it was decided), until an operator acts again. Only while
   * that change is still the last one: an operator's change made since — here or on another
   * instance, by this release or an older one that knows no rollback row — voids it, so a
   * rollback stored late (its database away meanwhile) or heard late never outlives the
   * operator's clear. Announced first (the database may be the backend that failed), then stored.
   */
  async shareRollback(state: RollbackState, basedOn: number): Promise<void> {
    const row = rollbackRow(state, basedOn);
    await this.channel?.publish(ROLLBACK_TOPIC, row);
    await this.models.FlagOverride.upsert({ name: ROLLBACK, ...row });
  }

  /** Follows the rollback `row` names, if it was decided under the operator change in force here. */
  private follow(row: OverrideRow) {
    const shared = rollbackOf(row);
    if (shared && shared.basedOn === this.epoch) this.options.onRollback?.(shared.state);
  }

  async sync(): Promise<void> {
    const generation = this.generation;
    const rows = await this.models.FlagOverride.findAll({ where: { name: [FLAG_NAME, ROLLBACK] } });
    if (generation !== this.generation) return;
    const row = rows.find((r) => r.name === FLAG_NAME);
    if (row) this.adopt(row);
    else this.lastChangeAt ??= 0; // never set: the first row to appear is an operator's change
    // Read in the same statement as the override: a rollback is judged against the operator
    // change in force with it.
    const rollback = rows.find((r) => r.name === ROLLBACK);
    if (rollback) this.follow(rollback);
  }

  /** Takes `row` as the current state; a row with a new time means an operator acted. */
  private adopt(row: OverrideRow) {
    this.current = (BACKENDS as readonly string[]).includes(row.value) ? { backend: row.value as BackendName, updatedAt: row.updatedAt, updatedBy: row.updatedBy } : undefined;
    if (this.lastChangeAt !== undefined && row.updatedAt !== this.lastChangeAt) this.options.onOperatorChange?.();
    this.lastChangeAt = row.updatedAt;
  }

  private async write(row: OverrideRow) {
    // An operator acted: the rollback in force ends everywhere (its `basedOn` is no longer the
    // last change). Emptied as well, for whoever reads the table.
    await this.models.FlagOverride.update({ value: '', updatedAt: row.updatedAt, updatedBy: row.updatedBy }, { where: { name: ROLLBACK } });
    await this.models.FlagOverride.upsert({ name: FLAG_NAME, ...row });
    this.generation++;
    this.lastChangeAt = row.updatedAt;
    this.adopt(row);
    this.options.onOperatorChange?.();
    await this.channel?.publish(TOPIC, row);
  }
}
