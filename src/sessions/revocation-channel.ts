/**
 * Revocations told to every instance at once, over Redis pub/sub.
 *
 * The revocation list (revocations.ts) is a table that each instance polls every
 * SYNC_INTERVAL_MS; that poll stays the source of truth and the backstop. When Redis is
 * configured, an instance that issues an entry also publishes it, and every instance applies
 * what it hears: a sealed cookie logged out on one instance is refused by the others at once
 * instead of up to one poll later. Losing a message (Redis down, a reconnect) costs only that
 * delay, never a revocation.
 */
import { Cluster, type Redis } from 'ioredis';

export interface RevocationEntry {
  kind: 'session' | 'user' | 'all';
  subject: string;
  notBefore: number;
  expiresAt: number;
}

/** How long a revoking request waits for Redis to take the message before it answers anyway. */
const PUBLISH_WAIT_MS = 100;

function isEntry(value: unknown): value is RevocationEntry {
  const e = value as Partial<RevocationEntry> | null;
  return (
    typeof e === 'object' &&
    e !== null &&
    (e.kind === 'session' || e.kind === 'user' || e.kind === 'all') &&
    typeof e.subject === 'string' &&
    Number.isFinite(e.notBefore) &&
    Number.isFinite(e.expiresAt)
  );
}

export class RevocationChannel {
  private readonly name: string;
  private readonly subscriber: Redis | Cluster;

  constructor(
    private readonly publisher: Redis | Cluster,
    keyPrefix: string,
    onEntry: (entry: RevocationEntry) => void,
    onError: (err: unknown) => void,
  ) {
    this.name = `${keyPrefix}revocations`;
    // A connection of its own (a subscribed connection can do nothing else), with an offline
    // queue: the SUBSCRIBE waits for Redis if it is down at start, and ioredis subscribes again
    // after every reconnect.
    this.subscriber = publisher instanceof Cluster ? publisher.duplicate([], { enableOfflineQueue: true }) : publisher.duplicate({ enableOfflineQueue: true });
    this.subscriber.on('error', () => undefined); // the main client already reports Redis trouble
    this.subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.name) return;
      try {
        const entry: unknown = JSON.parse(message);
        if (isEntry(entry)) onEntry(entry);
      } catch (err) {
        onError(err);
      }
    });
    this.subscriber.subscribe(this.name).catch(onError);
  }

  /**
   * Waited for, briefly: once Redis has taken the message it has handed it to every subscribed
   * instance, before the revoking request answers. Never throws: the poll is the backstop.
   */
  async publish(entry: RevocationEntry): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.publisher.publish(this.name, JSON.stringify(entry)).catch(() => undefined),
      new Promise((resolve) => {
        timer = setTimeout(resolve, PUBLISH_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  close(): void {
    this.subscriber.disconnect();
  }
}
