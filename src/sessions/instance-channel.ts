/**
 * News told to every instance at once, over Redis pub/sub.
 *
 * Instances share their state through database tables that each one polls every
 * SYNC_INTERVAL_MS: the revocation list (revocations.ts) and the flag override
 * (flags/override.ts). That poll stays the source of truth and the backstop. When Redis is
 * configured, an instance that changes one of them also publishes the change, and every
 * instance applies what it hears: a sealed cookie logged out on one instance is refused by the
 * others at once, and an override set on one instance is served by all, instead of up to one
 * poll later. Losing a message (Redis down, a reconnect) costs only that delay, never a change.
 *
 * Each topic is the channel `<channelPrefix><topic>`; one subscribed connection serves all. The
 * app's prefix is `<REDIS_KEY_PREFIX><deployment id>:` (db/deployment.ts): channels span every
 * numbered database of a Redis server, and only the instances sharing a database may hear each
 * other.
 */
import { Cluster, ReplyError, type Redis } from 'ioredis';
import { refuseEmptySlotMaps } from './redis-client.js';

/** How long a changing request waits for Redis to take the message before it answers anyway. */
const PUBLISH_WAIT_MS = 100;
/** How long after a refused SUBSCRIBE (NOPERM, a password briefly wrong) it is asked again. */
const SUBSCRIBE_RETRY_MS = 5_000;

export type TopicListener = (message: unknown) => void;

export class InstanceChannel {
  private readonly subscriber: Redis | Cluster;
  private readonly listeners = new Map<string, TopicListener>();
  /**
   * The one retry waiting per channel. A refusal seen while one waits (the SUBSCRIBE sent again
   * on a reconnect) starts no other: one per refusal piled up, each reconnect adding a retry per
   * channel that went on every SUBSCRIBE_RETRY_MS for as long as Redis refused it.
   */
  private readonly retries = new Map<string, NodeJS.Timeout>();
  /** Callers of `listen` waiting for a channel's SUBSCRIBE, which waits for the connection to be ready. */
  private readonly waiting = new Map<string, Array<() => void>>();
  private closed = false;

  constructor(
    private readonly publisher: Redis | Cluster,
    private readonly channelPrefix: string,
    private readonly onError: (err: unknown) => void,
    onConnectionError?: (err: Error, connection: Redis | Cluster) => void,
  ) {
    // A connection of its own (a subscribed connection can do nothing else), with an offline
    // queue and no limit on a command's retries: the SUBSCRIBE waits for Redis if it is down at
    // start (with the app's one retry, it failed at the first reconnect and was never sent
    // again: an instance started during an outage heard nothing until restarted), subscribed
    // again after every reconnect. Subscribed again after a reconnect by this class, not by ioredis (`autoResubscribe`), whose
    // own SUBSCRIBE on a new connection has no handler for its refusal: an ACL user deleted or
    // re-passworded while the default user needs no password had it refused (with AUTH's error,
    // the ready check answered in between), and the unhandled rejection ended the process — every
    // instance at once. ioredis also forgot a channel whose resubscription failed.
    const waitForRedis = { enableOfflineQueue: true, maxRetriesPerRequest: null, autoResubscribe: false };
    this.subscriber =
      publisher instanceof Cluster
        ? refuseEmptySlotMaps(publisher.duplicate([], { enableOfflineQueue: true, redisOptions: { ...publisher.options.redisOptions, maxRetriesPerRequest: null } }))
        : publisher.duplicate(waitForRedis);
    // The main client already reports Redis trouble, but not this connection's own: a Redis at
    // `maxclients` may take the main client's connection and refuse this one.
    this.subscriber.on('error', (err: Error) => onConnectionError?.(err, this.subscriber));
    if (publisher instanceof Cluster) {
      // The subscription sits on one node. A node taken out of the cluster (`del-node` leaves it
      // running) no longer hears what is published elsewhere, and this client, which sends
      // nothing else, would never learn it (its slot map is never refreshed): when the main
      // client's map drops a node, this one's is refreshed too, and ioredis moves the
      // subscription off a node that has gone. The node gone answers an empty map, which this
      // client, like the main one, does not take (refuseEmptySlotMaps): taken, it emptied the
      // pool and the subscription waited for a reconnect.
      publisher.on('-node', this.followNodes);
    }
    if (!(this.subscriber instanceof Cluster)) {
      this.subscriber.on('ready', () => {
        for (const channel of this.listeners.keys()) void this.subscribe(channel);
      });
    }
    this.subscriber.on('message', (channel: string, message: string) => {
      const listener = this.listeners.get(channel);
      if (!listener) return;
      try {
        listener(JSON.parse(message));
      } catch (err) {
        onError(err);
      }
    });
  }

  /**
   * Messages published on `topic`, by any instance this one included, reach `listener`. The
   * promise settles once Redis has confirmed the subscription (or it failed, which is
   * reported): a caller may wait for it, none has to. It never rejects.
   */
  listen(topic: string, listener: TopicListener): Promise<void> {
    const channel = this.channelPrefix + topic;
    this.listeners.set(channel, listener);
    return this.subscribe(channel);
  }

  /**
   * A refusal is reported and the SUBSCRIBE sent again every SUBSCRIBE_RETRY_MS until Redis takes
   * it: ioredis subscribes again after a reconnect only to channels it once subscribed, so an ACL
   * fixed later, or a password wrong for a moment, left the instance deaf until restarted.
   */
  private subscribe(channel: string): Promise<void> {
    if (!(this.subscriber instanceof Cluster) && this.subscriber.status !== 'ready') {
      // Sent by the 'ready' listener instead. ioredis writes a SUBSCRIBE at once on a connection
      // still in its handshake (it may be sent while Redis loads), and there it came before the
      // ready check's INFO (or CLIENT SETINFO), refused then in subscriber mode: ioredis dropped
      // the connection and made another, and what was published meanwhile never arrived — though
      // the SUBSCRIBE had been confirmed (test clients, which send CLIENT SETINFO: 19 of 300
      // starts under load).
      if (this.closed) return Promise.resolve();
      return new Promise((resolve) => this.waiting.set(channel, [...(this.waiting.get(channel) ?? []), resolve]));
    }
    return this.subscriber.subscribe(channel).then(
      () => {
        clearTimeout(this.retries.get(channel));
        this.retries.delete(channel);
        this.settle(channel);
      },
      (err: unknown) => {
        this.settle(channel);
        // Closed before Redis answered (an instance stopped right after start): nothing is wrong.
        if (this.closed) return;
        this.onError(err);
        if (this.retries.has(channel)) return;
        const retry = setTimeout(() => {
          this.retries.delete(channel);
          void this.subscribe(channel);
        }, SUBSCRIBE_RETRY_MS);
        retry.unref();
        this.retries.set(channel, retry);
      },
    );
  }

  /**
   * Waited for, briefly: once Redis has taken the message it has handed it to every subscribed
   * instance, before the changing request answers. Never throws: the poll is the backstop.
   */
  async publish(topic: string, message: unknown): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.publisher.publish(this.channelPrefix + topic, JSON.stringify(message)).catch((err: unknown) => {
        // Redis down is reported where the connection is; Redis refusing (an ACL without
        // PUBLISH) is news, or the others would hear of every change a poll late, unexplained.
        if (err instanceof ReplyError) this.onError(err);
      }),
      new Promise((resolve) => {
        // Given up only after one more look at the sockets: a process held up past the wait (a
        // long GC, a busy machine) runs its due timers before it reads its sockets, and answered
        // the change before reading the reply Redis had long sent, and delivered to the others.
        timer = setTimeout(() => setImmediate(resolve), PUBLISH_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  /** The callers of `listen` waiting for `channel` go on: its SUBSCRIBE was answered. */
  private settle(channel: string): void {
    for (const resolve of this.waiting.get(channel) ?? []) resolve();
    this.waiting.delete(channel);
  }

  private readonly followNodes = () => (this.subscriber as Cluster).refreshSlotsCache();

  close(): void {
    this.closed = true;
    for (const channel of [...this.waiting.keys()]) this.settle(channel);
    this.publisher.off('-node', this.followNodes);
    for (const retry of this.retries.values()) clearTimeout(retry);
    this.subscriber.disconnect();
  }
}
