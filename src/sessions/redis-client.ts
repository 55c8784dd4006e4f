/**
 * The ioredis client for REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES. Commands fail fast
 * while disconnected (no offline queue, one retry) so the circuit breaker and the fallback see
 * an outage at once instead of requests waiting on a queue; reconnection goes on in the background.
 */
import { Redis, Cluster } from 'ioredis';
import type { RedisConnection } from '../config/config.js';

const retryStrategy = (times: number) => Math.min(100 * times, 1000);
/** How often a Cluster client asks for the slot map even when no command was redirected. */
export const SLOTS_REFRESH_MS = 5000;

export function createRedisClient(c: RedisConnection): Redis | Cluster {
  // No auto-pipelining: ioredis keeps one auto-pipeline in flight per connection and queues
  // every command issued meanwhile into the next, so under load each command waits for the
  // round trip ahead of it as well as its own, and one slow answer holds up everything behind
  // it. Measured side by side (docs/performance.md, fourth round): the session-writing request's
  // p99 halves without it, for about 4 % more CPU per request.
  const common = { enableOfflineQueue: false, maxRetriesPerRequest: 1, enableAutoPipelining: false, connectTimeout: 1000 } as const;
  // No CLIENT SETINFO on connect: ioredis sends it first and drops its answer, and a Redis at
  // `maxclients` answers a new connection only with "ERR max number of clients reached" before it
  // closes it, which then reached nobody (the log said `write EPIPE` or "Stream isn't writeable").
  // Without it the first command on the connection (the ready check) gets it: see isMaxClients.
  const noClientInfo = { disableClientInfo: true } as const;
  if (c.cluster?.length) {
    const url = new URL(c.url);
    const cluster = new Cluster(c.cluster, {
      ...common,
      clusterRetryStrategy: retryStrategy,
      // ioredis 5 refreshes its slot map only on a MOVED, a CLUSTERDOWN or a lost connection (its
      // typings say every 5 s by default; the default is off). A master that hangs with its
      // connections open (a paused host) sends none of these: once its replica had taken the
      // slots over, the client still sent them to it, and the probe still asked it, so Redis read
      // "down" (breaker open, every session served from the database copy) until the old master
      // came back — forever if it never did. A timed refresh finds the promoted replica.
      slotsRefreshInterval: SLOTS_REFRESH_MS,
      redisOptions: { ...noClientInfo, password: url.password || undefined, username: url.username || undefined, tls: url.protocol === 'rediss:' ? {} : undefined },
    });
    // Each node's connection is a Redis client of its own, made as the cluster discovers it.
    cluster.on('+node', (node: Redis) => coalesceWrites(node));
    return refuseEmptySlotMaps(cluster);
  }
  if (c.sentinels?.length) {
    const url = new URL(c.url);
    // The master's credentials as REDIS_URL gives them (the Sentinels are asked without; config.ts
    // refuses rediss:// here).
    const master = { username: url.username || undefined, password: url.password || undefined };
    // A Sentinel that hangs (its host paused) still takes connections: asked where the master is
    // without a deadline, the client waited on it for as long as it hung, first in the list or
    // not. With one, it asks the next.
    const client = new Redis({ ...common, ...noClientInfo, retryStrategy, sentinels: c.sentinels, name: c.sentinelName, sentinelCommandTimeout: 1000, ...master, db: Number(url.pathname.slice(1) || 0) });
    followSwitches(client, new SwitchWatch(c.sentinels, c.sentinelName));
    return refuseWithoutDatabase(coalesceWrites(client));
  }
  return refuseWithoutDatabase(coalesceWrites(new Redis(c.url, { ...common, ...noClientInfo, retryStrategy })));
}

/** Redis refusing a new connection because it has `maxclients` connections already. */
export const isMaxClients = (err: unknown): boolean => err instanceof Error && err.message.includes('max number of clients reached');

/** The one ioredis method that asks a node for the slot map (one node at a time, in random order). */
interface SlotMapAsker {
  getInfoFromNode(node: Redis | undefined, callback: (err?: Error | null) => void): void;
}
type SlotsCallback = (err: Error | null, slots?: unknown) => void;

/**
 * A node that answers CLUSTER SLOTS with no slot at all is not taken at its word: ioredis goes on
 * to the next node, as when a node does not answer. Such a node is one taken out of the cluster
 * and left running (`redis-cli --cluster del-node` resets it); it stays among this client's
 * startup nodes and, until the map is refreshed, in its pool. ioredis asks one of the nodes it
 * holds, at random, and took an empty answer for the whole cluster: it emptied its pool (every
 * node disconnected), commands failed ("Cluster isn't ready", the probe's "master ... is not
 * reachable"), and the client closed and reconnected from its startup nodes, the removed one
 * among them (asked first again, the same again): Redis "down" (probe failed, fallback serving)
 * for nothing. A cluster whose every node holds no slot now
 * fails to connect, as it could serve nothing anyway.
 *
 * ioredis has no option for it. Its refresh is wrapped only as far as the node it is handed:
 * ioredis asks on a copy of that node's connection (`duplicate()`, so that a blocked connection
 * does not hold the map up), and only that copy's CLUSTER SLOTS is checked. The order of the
 * nodes tried, concurrent refreshes joined into one, and what is done with a map stay ioredis's.
 * A copy made with `cluster.duplicate()` is a new client: wrap it too.
 */
export function refuseEmptySlotMaps(cluster: Cluster): Cluster {
  const asker = cluster as unknown as SlotMapAsker;
  if (typeof asker.getInfoFromNode !== 'function') throw new Error('ioredis changed: Cluster#getInfoFromNode is gone (see refuseEmptySlotMaps)');
  const ask = asker.getInfoFromNode.bind(cluster);
  asker.getInfoFromNode = (node, callback) => ask(node && refusingEmptySlots(node), callback);
  return cluster;
}

/** `node`, whose copies made by `duplicate()` answer an empty CLUSTER SLOTS with an error. */
function refusingEmptySlots(node: Redis): Redis {
  const view = Object.create(node) as Redis;
  view.duplicate = (...args: Parameters<Redis['duplicate']>) => {
    const copy = node.duplicate(...args);
    const send = copy.cluster.bind(copy) as unknown as (subcommand: string, callback: SlotsCallback) => unknown;
    (copy as unknown as { cluster: typeof send }).cluster = (subcommand, callback) =>
      send(subcommand, (err, slots) => {
        if (!err && String(subcommand).toUpperCase() === 'SLOTS' && Array.isArray(slots) && slots.length === 0) {
          callback(new Error(`${node.options.host}:${node.options.port} holds no slot (taken out of the cluster?): its empty slot map is not taken`));
        } else callback(err, slots);
      });
    return copy;
  };
  return view;
}

/** The master Sentinel has just switched to, as `+switch-master` announces it. */
type Master = { host: string; port: number };

/**
 * Sentinel's `+switch-master` for REDIS_SENTINEL_NAME, heard on every Sentinel of
 * REDIS_SENTINELS (one that learns of a failover late announces it when it does).
 *
 * ioredis leaves a master only when its connection closes. A master that hangs with its
 * connections open (a paused host, a partition that keeps TCP up) was never left: Redis stayed
 * "down" on every instance until it came back. ioredis's own `failoverDetector` is not used:
 * it calls the Sentinel connector's disconnect(), which, when it comes while a reconnect is
 * asking a Sentinel for the master (after a killed master, the client reconnects every second
 * until the failover), makes that reconnect fail with "Connection is closed." and ioredis then
 * ends the client for good (status `end`, never reconnected): Redis down until the app restarts
 * (the killed-master test failed so). Here only a connection that is up, or that comes up from
 * an attempt begun before the switch, is dropped, by destroying its socket: ioredis sees a lost
 * connection and reconnects as always, asking the Sentinels again.
 */
class SwitchWatch {
  private readonly sentinels: Redis[];
  private readonly clients = new Map<Redis, { stale?: Master }>();

  constructor(addresses: Array<{ host: string; port: number }>, private readonly name: string) {
    this.sentinels = addresses.map(({ host, port }) => {
      // Subscribed for as long as the app runs: the SUBSCRIBE waits for a Sentinel that is down,
      // and ioredis subscribes again after every reconnect.
      // TCP keepalive: a subscription sends nothing, and a Sentinel whose host vanished without a
      // reset would otherwise leave it half-open, deaf, for the kernel's two hours.
      const sentinel = new Redis({ host, port, retryStrategy, connectTimeout: 1000, keepAlive: 10_000, enableOfflineQueue: true, maxRetriesPerRequest: null });
      sentinel.on('error', () => undefined); // the main client reports Redis trouble
      sentinel.on('message', (_channel: string, message: string) => this.heard(message));
      sentinel.subscribe(SWITCH_MASTER).catch(() => undefined);
      return sentinel;
    });
  }

  follow(client: Redis): void {
    const state: { stale?: Master } = {};
    this.clients.set(client, state);
    // A new attempt asks a Sentinel afresh, which knows the new master once it has announced it
    // (its address changes as it publishes): only an attempt already under way may be stale.
    // ioredis emits each status change on the next tick, before any I/O: no message comes
    // between an attempt's start and its 'connecting'.
    client.on('connecting', () => (state.stale = undefined));
    client.on('close', () => (state.stale = undefined));
    client.on('connect', () => {
      const stale = state.stale;
      state.stale = undefined;
      if (stale) leaveUnlessOn(client, stale);
    });
    // Closed by the app (ioredis emits no 'end' for a client closed while it waits to reconnect).
    const release = () => {
      if (!this.clients.delete(client) || this.clients.size > 0) return;
      for (const sentinel of this.sentinels) sentinel.disconnect();
    };
    client.on('end', release);
    const disconnect = client.disconnect.bind(client);
    client.disconnect = (reconnect = false) => {
      if (!reconnect) release();
      disconnect(reconnect);
    };
    const quit = client.quit.bind(client);
    client.quit = (callback) => {
      release();
      return quit(callback);
    };
  }

  /** `<name> <old-ip> <old-port> <new-ip> <new-port>` */
  private heard(message: string): void {
    const fields = message.split(' ');
    const [host, port] = fields.slice(-2);
    if (fields.length < 5 || !host || fields.slice(0, -4).join(' ') !== this.name) return;
    const master = { host, port: Number(port) };
    for (const [client, state] of this.clients) {
      if (client.status === 'connect' || client.status === 'ready') leaveUnlessOn(client, master);
      else if (client.status === 'connecting') state.stale = master;
    }
  }
}

const SWITCH_MASTER = '+switch-master';

/** Drops the connection unless it is to `master` (a name in place of an address only costs a reconnect). */
function leaveUnlessOn(client: Redis, master: Master): void {
  const stream = client.stream;
  if (!stream || stream.destroyed) return;
  if (stream.remoteAddress === master.host && stream.remotePort === master.port) return;
  // Not client.disconnect(true): that goes through the connector's disconnect() too (see
  // SwitchWatch). A destroyed socket closes at once even when the master does not answer.
  stream.destroy();
}

/** `client` and every client duplicated from it (the instance channel's subscriber) follow `watch`. */
function followSwitches(client: Redis, watch: SwitchWatch): void {
  watch.follow(client);
  const duplicate = client.duplicate.bind(client);
  client.duplicate = (override) => {
    const copy = duplicate(override);
    followSwitches(copy, watch);
    return copy;
  };
}

/** Redis's answer to SELECT of a database number it does not have (its `databases` setting). */
const NO_SUCH_DATABASE = /DB index is out of range/i;
/** Its answer when REDIS_URL's ACL user may not run SELECT at all. */
const SELECT_NOT_ALLOWED = /NOPERM.*'select'/i;
const missingDatabases = new WeakMap<Redis, Error>();

/**
 * The database REDIS_URL names, when Redis refused to select it on the current connection.
 * ioredis reports a failed SELECT as an 'error' event and then goes ready anyway, on database
 * 0, where this deployment's sessions would mix with whatever else uses it.
 */
export function missingDatabase(client: Redis | Cluster): Error | undefined {
  return client instanceof Redis ? missingDatabases.get(client) : undefined;
}

/**
 * Refuses every command while Redis has refused the database: the breaker then sees the redis
 * backend as down and the fallback serves, as in any other outage, instead of sessions going to
 * database 0. Each connection selects again (a restarted Redis may have more databases).
 */
function refuseWithoutDatabase(client: Redis): Redis {
  // 'connect' is emitted on the tick after ioredis has sent SELECT, and SELECT's answer comes
  // before the connection is ready (its ready check is sent after it), so no command of ours
  // goes out between the answer and this flag.
  let refusal: Error | undefined;
  client.on('connect', () => {
    refusal = undefined;
    missingDatabases.delete(client);
  });
  client.on('error', (err: Error) => {
    if (NO_SUCH_DATABASE.test(err.message)) refusal = new Error(`Redis has no database ${client.options.db} (${err.message})`);
    else if (SELECT_NOT_ALLOWED.test(err.message)) refusal = new Error(`this Redis user may not select database ${client.options.db} (${err.message}): allow +select in its ACL`);
    else return;
    missingDatabases.set(client, refusal);
  });
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command, stream) => {
    if (!refusal || client.status !== 'ready') return send(command, stream);
    command.reject(refusal);
    return command.promise;
  };
  return client;
}

/**
 * Commands sent during one turn of the event loop leave in one write: the socket is corked at
 * the first and uncorked once the turn's I/O callbacks have run (setImmediate), when Node writes
 * what was buffered with one writev(2). Without this each command is its own write(2), which on
 * loopback costs more than the rest of the command (fifth round in docs/performance.md: a Redis
 * read 93 → 76 µs of server CPU, p99 14.6 → 8.1 ms). Unlike ioredis's auto-pipelining, nothing
 * waits for the answers to earlier commands. ioredis sends every command through
 * `sendCommand`, and writes it to `client.stream` right there when the connection is ready.
 */
export function coalesceWrites(client: Redis): Redis {
  const send = client.sendCommand.bind(client);
  let corked: { uncork(): void } | undefined;
  const uncork = () => {
    corked?.uncork();
    corked = undefined;
  };
  client.sendCommand = (command, stream) => {
    if (!corked && !stream && client.status === 'ready' && client.stream) {
      corked = client.stream;
      client.stream.cork();
      setImmediate(uncork);
    }
    return send(command, stream);
  };
  return client;
}

/** Waits for the first connection, at most `ms`; start-up goes on either way (Redis may come later). */
export async function waitForRedis(client: Redis | Cluster, ms: number): Promise<boolean> {
  if (client.status === 'ready') return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(false), ms);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    client.once('ready', onReady);
  });
}
