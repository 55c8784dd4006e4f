/**
 * A backend switched off by configuration (REDIS_URL=none): it never serves, so whatever
 * selects it (an Unleash variant, say) is placed in the fallback, and /readyz says `disabled`.
 */
import type { BackendName } from '../config/config.js';
import { BackendUnavailableError } from './errors.js';
import type { SessionRecord } from './session.js';
import type { IndexedSessionStore } from './store.js';

export class DisabledStore implements IndexedSessionStore {
  readonly available = false;
  readonly disabled = true;
  constructor(readonly backend: BackendName) {}

  private refuse(): never {
    throw new BackendUnavailableError(this.backend, 'error');
  }
  async load(_token: string): Promise<SessionRecord | undefined> {
    return this.refuse();
  }
  async create(_record: SessionRecord): Promise<string> {
    return this.refuse();
  }
  async moveIn(_record: SessionRecord, _readVersion: number): Promise<string | undefined> {
    return this.refuse();
  }
  async save(_record: SessionRecord): Promise<string | undefined> {
    return this.refuse();
  }
  async touch(_record: SessionRecord): Promise<string | undefined> {
    return this.refuse();
  }
  async destroy(_record: SessionRecord): Promise<void> {
    return this.refuse();
  }
  async evict(_record: SessionRecord): Promise<void> {
    return this.refuse();
  }
  async listByUser(_userId: number): Promise<SessionRecord[]> {
    return [];
  }
  async ping(): Promise<void> {
    return this.refuse();
  }
  async close(): Promise<void> {}
}

export function isDisabled(store: object): boolean {
  return (store as { disabled?: boolean }).disabled === true;
}
