/**
 * Sessions in Redis (ioredis; a single node, Sentinel or Cluster). Redis keeps the expiry.
 *
 * Layout — every command touches one key, so nothing crosses a Cluster slot:
 *   <prefix>s:<first 22 chars of hash(id)>  string: the binary record of redis-record.ts, with PX.
 *       132 bits keep collisions out of reach at 21 bytes less per key than the whole hash,
 *       and the key stays printable for operators. The name cannot collide with the previous
 *       layout's 43-character keys.
 *   <prefix>u:<userId>  sorted set of the user's full id hashes scored by absolute expiry
 *       (option `userIndex`). Written at create, removed from at destroy and evict, pruned
 *       on read and of past absolute expiries at create; a save or touch cannot change either, so they leave it alone.
 *
 * Per request: a load is one GET; a save one SET (or one script when it must check the
 * version); a touch one script.
 *
 * The previous layout (a hash under `s:<all 43 chars>`) is never read: such a session misses
 * here, the app's MirroredStore reads it through from its database copy and writes it back in
 * this format on that request.
 */
import calculateSlot from 'cluster-key-slot';
import { Cluster, type Redis, type Result } from 'ioredis';
import { jsonCodec, type DataCodec } from './codec.js';
import { SessionConflictError } from './errors.js';
import { decodeRecord, encodeRecord, VERSION_OFFSET } from './redis-record.js';
import { hashSessionId, type SessionRecord } from './session.js';
import type { SessionIndex, SessionStore } from './store.js';

type RedisClient = Redis | Cluster;

// A value that is not a string (pcall: a key of another type) or too short to hold a version
// is no session, as for a load: 0, not written over. -1: the stored version is not the expected one.
const SAVE_IF_VERSION = `
local v = redis.pcall('get', KEYS[1])
if type(v) ~= 'string' or #v < ${VERSION_OFFSET + 4} then return 0 end
local a, b, c, d = string.byte(v, ${VERSION_OFFSET + 1}, ${VERSION_OFFSET + 4})
if ((a * 256 + b) * 256 + c) * 256 + d ~= tonumber(ARGV[3]) then return -1 end
redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
return 1`;

// The same version as the record being touched: write its times (the value holds them). An
// older one is a copy left behind while the session was served elsewhere (a save that fell
// back to the database while Redis refused writes): the toucher's record is the session, and
// replaces it. A newer one: a save landed since the toucher read it, and its data must stay;
// only the key's life is extended, never shortened below what that save set.
const TOUCH = `
local v = redis.pcall('get', KEYS[1])
if type(v) ~= 'string' or #v < ${VERSION_OFFSET + 4} then return 0 end
local ttl = tonumber(ARGV[2])
local a, b, c, d = string.byte(v, ${VERSION_OFFSET + 1}, ${VERSION_OFFSET + 4})
local e, f, g, h = string.byte(ARGV[1], ${VERSION_OFFSET + 1}, ${VERSION_OFFSET + 4})
if ((a * 256 + b) * 256 + c) * 256 + d <= ((e * 256 + f) * 256 + g) * 256 + h then
  redis.call('set', KEYS[1], ARGV[1], 'px', ttl)
elseif redis.call('pttl', KEYS[1]) < ttl then
  redis.call('pexpire', KEYS[1], ttl)
end
return 1`;

// A move in: written unless the key holds a version newer than the one the mover read (a save
// that landed after the session moved out, and so survived its eviction): 0, nothing written.
const MOVE_IN = `
local v = redis.pcall('get', KEYS[1])
if type(v) == 'string' and #v >= ${VERSION_OFFSET + 4} then
  local a, b, c, d = string.byte(v, ${VERSION_OFFSET + 1}, ${VERSION_OFFSET + 4})
  if ((a * 256 + b) * 256 + c) * 256 + d > tonumber(ARGV[3]) then return 0 end
end
redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
return 1`;

// The key deleted only while it holds the version that was moved (ARGV[1]): 1 if deleted.
const DELETE_IF_VERSION = `
local v = redis.pcall('get', KEYS[1])
if type(v) ~= 'string' or #v < ${VERSION_OFFSET + 4} then return 0 end
local a, b, c, d = string.byte(v, ${VERSION_OFFSET + 1}, ${VERSION_OFFSET + 4})
if ((a * 256 + b) * 256 + c) * 256 + d ~= tonumber(ARGV[1]) then return 0 end
redis.call('del', KEYS[1])
return 1`;

/** The probe's key (`ping`) expires by itself: a removed deployment leaves nothing behind. */
const PROBE_KEY_TTL_MS = 60_000;

// The probe (`ping`): a write, through a script, as every versioned save and touch is.
const PROBE = `return redis.call('set', KEYS[1], '1', 'px', ARGV[1])`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    sbSaveIfVersion(key: string, value: Buffer, ttl: number, expectedVersion: number): Result<number, Context>;
    sbTouchRecord(key: string, value: Buffer, ttl: number): Result<number, Context>;
    sbDeleteIfVersion(key: string, version: number): Result<number, Context>;
    sbMoveIn(key: string, value: Buffer, ttl: number, readVersion: number): Result<number, Context>;
    sbProbe(key: string, ttl: number): Result<string, Context>;
  }
}

export interface RedisStoreOptions {
  keyPrefix: string;
  /** How long the per-user index lives after its last session was created: no session outlives it. */
  absoluteTimeoutMs: number;
  /** How data rests (encryption); the plain JSON codec means the compact encoding. */
  codec?: DataCodec;
  /**
   * Keep the per-user index so that this store alone can list a user's sessions (default
   * true). Off, the store has no `listByUser` and writes one key per session; the app lists
   * from the database directory instead (SessionBackends.listByUser).
   */
  userIndex?: boolean;
}

class RedisSessionStore implements SessionStore {
  readonly backend = 'redis' as const;
  /** Only with the user index: `isIndexed` must see a store without it as unlistable. */
  declare readonly listByUser?: (userId: number) => Promise<SessionRecord[]>;
  /**
   * On a Cluster only (store.ts, Partitioned): the master serving the session's key, so that a
   * silent master is judged by its own silence while the others answer.
   */
  declare readonly partitionOf?: (idHash: string) => string | undefined;
  private readonly codec: DataCodec | undefined;
  private readonly indexed: boolean;

  constructor(
    private readonly redis: RedisClient,
    private readonly options: RedisStoreOptions,
  ) {
    redis.defineCommand('sbSaveIfVersion', { numberOfKeys: 1, lua: SAVE_IF_VERSION });
    redis.defineCommand('sbTouchRecord', { numberOfKeys: 1, lua: TOUCH });
    redis.defineCommand('sbDeleteIfVersion', { numberOfKeys: 1, lua: DELETE_IF_VERSION });
    redis.defineCommand('sbMoveIn', { numberOfKeys: 1, lua: MOVE_IN });
    redis.defineCommand('sbProbe', { numberOfKeys: 1, lua: PROBE });
    this.codec = options.codec === jsonCodec ? undefined : options.codec;
    this.indexed = options.userIndex ?? true;
    if (this.indexed) this.listByUser = (userId) => this.listIndexed(userId);
    if (redis instanceof Cluster) this.partitionOf = (idHash) => redis.slots[calculateSlot(this.sessionKey(idHash))]?.[0];
  }

  private sessionKey(idHash: string) {
    return `${this.options.keyPrefix}s:${idHash.slice(0, 22)}`;
  }
  /** Where the previous layout kept the session (see destroy). */
  private legacyKey(idHash: string) {
    return `${this.options.keyPrefix}s:${idHash}`;
  }
  private userKey(userId: number) {
    return `${this.options.keyPrefix}u:${userId}`;
  }

  // Not async, here and in `read`: on every request's path, and each async wrapper that only
  // hands on another promise costs a promise and extra turns of the microtask queue.
  load(token: string): Promise<SessionRecord | undefined> {
    return this.loadByHash(hashSessionId(token), token);
  }

  /** For operator tools that only know the (full, 43-character) hash, from the database directory. */
  loadByHash(idHash: string, id = ''): Promise<SessionRecord | undefined> {
    return this.read(this.sessionKey(idHash)).then((value) => (value ? this.decode(value, id, idHash) : undefined));
  }

  async create(r: SessionRecord): Promise<string> {
    const ttl = r.expiresAt - Date.now();
    if (ttl <= 0) return r.id;
    const writes: Array<Promise<unknown>> = [this.redis.set(this.sessionKey(r.idHash), encodeRecord(r, this.codec), 'PX', ttl)];
    if (this.indexed) writes.push(...this.addToUserIndex(r));
    await Promise.all(writes);
    return r.id;
  }

  /**
   * Sent together, applied in order on the key's one node; the index outlives any session in it.
   * Members past their absolute expiry go at each add, not only when the user's sessions are
   * listed: a user nobody lists (koa-session's, all filed under user 0) would otherwise keep
   * every session it ever had while new ones keep the index alive.
   */
  private addToUserIndex(r: SessionRecord): Array<Promise<unknown>> {
    const userKey = this.userKey(r.userId);
    return [
      this.redis.zremrangebyscore(userKey, '-inf', Date.now()),
      this.redis.zadd(userKey, r.absoluteExpiresAt, r.idHash),
      this.redis.pexpire(userKey, this.options.absoluteTimeoutMs),
    ];
  }

  /**
   * Moves are ordered by the database directory (DatabaseStore.moveIn); here a move also never
   * writes over a copy newer than what the mover read: one that outlived its eviction because a
   * save landed after the move out read it. That copy holds changes the mover has not seen.
   */
  async moveIn(r: SessionRecord, readVersion: number): Promise<string | undefined> {
    const ttl = r.expiresAt - Date.now();
    if (ttl <= 0) return r.id;
    if ((await this.redis.sbMoveIn(this.sessionKey(r.idHash), encodeRecord(r, this.codec), ttl, readVersion)) !== 1) return undefined;
    if (this.indexed) await Promise.all(this.addToUserIndex(r));
    return r.id;
  }

  async save(r: SessionRecord, expectedVersion?: number): Promise<string | undefined> {
    const ttl = r.expiresAt - Date.now();
    if (ttl <= 0) return undefined;
    const key = this.sessionKey(r.idHash);
    const value = encodeRecord(r, this.codec);
    if (expectedVersion === undefined) return (await this.redis.set(key, value, 'PX', ttl, 'XX')) === 'OK' ? r.id : undefined;
    const written = await this.redis.sbSaveIfVersion(key, value, ttl, expectedVersion);
    if (written === -1) throw new SessionConflictError(expectedVersion);
    return written === 1 ? r.id : undefined;
  }

  async touch(r: SessionRecord): Promise<string | undefined> {
    const ttl = r.expiresAt - Date.now();
    if (ttl <= 0) return undefined;
    const touched = await this.redis.sbTouchRecord(this.sessionKey(r.idHash), encodeRecord(r, this.codec), ttl);
    return touched === 1 ? r.id : undefined;
  }

  /**
   * Also deletes the key the previous layout used: were the old code deployed again, it
   * would read it, and a logged-out session should not be there for it.
   */
  async destroy(r: SessionRecord): Promise<void> {
    const removals: Array<Promise<unknown>> = [this.redis.del(this.sessionKey(r.idHash))];
    if (r.idHash.length > 22) removals.push(this.redis.del(this.legacyKey(r.idHash)));
    if (this.indexed) removals.push(this.redis.zrem(this.userKey(r.userId), r.idHash));
    await Promise.all(removals);
  }

  /** Only the copy that was moved (its version): one saved or moved back here since stays. Whether it removed it. */
  async evict(r: SessionRecord): Promise<boolean> {
    if ((await this.redis.sbDeleteIfVersion(this.sessionKey(r.idHash), r.version)) !== 1) return false;
    if (this.indexed) await this.redis.zrem(this.userKey(r.userId), r.idHash);
    return true;
  }

  /** Members whose session expired or is gone are pruned here, the only place that reads them. */
  private async listIndexed(userId: number): Promise<SessionRecord[]> {
    const key = this.userKey(userId);
    const [, hashes] = await Promise.all([this.redis.zremrangebyscore(key, '-inf', Date.now()), this.redis.zrange(key, 0, -1)]);
    const values = await Promise.all(hashes.map((h) => this.read(this.sessionKey(h))));
    const records: SessionRecord[] = [];
    const gone: string[] = [];
    values.forEach((value, i) => {
      const record = value && this.decode(value, '', hashes[i]!);
      if (record) records.push(record);
      else gone.push(hashes[i]!);
    });
    if (gone.length > 0) await this.redis.zrem(key, ...gone);
    return records.sort((a, b) => a.createdAt - b.createdAt);
  }

  /**
   * Up when Redis takes a session write. On a cluster, every master that serves slots must
   * answer and see the cluster as ok (a full master is not detected there): one down
   * master leaves its slots unserved. The masters are those the slot map names, not those
   * ioredis is connected to: it drops a dead master from its node list and adds it back at each
   * reconnection attempt, until the cluster has promoted a replica — asked only the nodes it
   * holds, a probe said "up" and "down" by turns while a third of the sessions had no server.
   * A master the map names but ioredis holds no connection to is asked for again: ioredis learns
   * the cluster anew (CLUSTER SLOTS) only when a command needs it, and while the breaker is open
   * the probe is the only command.
   */
  async ping(): Promise<void> {
    if (!(this.redis instanceof Cluster)) {
      // A scripted write, not PING: a Redis at `maxmemory` under `noeviction`, a replica left
      // read-only after a failover, or an ACL without scripting answers PING and reads, and
      // refuses every session write.
      await this.redis.sbProbe(`${this.options.keyPrefix}probe`, PROBE_KEY_TTL_MS);
      return;
    }
    const cluster = this.redis;
    const connected = new Map(cluster.nodes('master').map((node) => [`${node.options.host}:${node.options.port}`, node]));
    const serving = new Set(cluster.slots.map((nodes) => nodes?.[0]).filter((key) => key !== undefined));
    if (serving.size === 0) throw new Error('no Redis Cluster master reachable');
    await Promise.all(
      [...serving].map(async (key) => {
        const node = connected.get(key);
        if (!node) {
          cluster.refreshSlotsCache();
          throw new Error(`Redis Cluster master ${key} is not reachable`);
        }
        const info = String(await node.cluster('INFO'));
        if (info.includes('cluster_state:ok')) return;
        // A node taken out of the cluster (`redis-cli --cluster del-node` resets it and leaves it
        // running) holds no slot and says "fail", and this client's slot map, refreshed only when
        // a command is redirected, may still name it: no outage. The map is refreshed instead
        // (from another node, if ioredis asks this one first: see refuseEmptySlotMaps).
        if (/^cluster_slots_assigned:0\r?$/m.test(info)) return void cluster.refreshSlotsCache();
        throw new Error('Redis Cluster state is not ok');
      }),
    );
  }

  async close(): Promise<void> {
    // The client belongs to the application, which quits it.
  }

  /** A key of another type is no session (a miss), not a failure of Redis. */
  private read(key: string): Promise<Buffer | null> {
    return this.redis.getBuffer(key).catch((err: unknown) => {
      if (err instanceof Error && err.message.startsWith('WRONGTYPE')) return null;
      throw err;
    });
  }

  private decode(value: Buffer, id: string, idHash: string): SessionRecord | undefined {
    const record = decodeRecord(value, id, idHash, this.codec);
    return record && record.expiresAt > Date.now() ? record : undefined;
  }
}

/**
 * The store's type says whether it can list: with the user index (the default) it is a
 * SessionIndex, with `userIndex: false` it has no `listByUser` at all. The cast states what
 * the constructor does, which TypeScript cannot infer for a class.
 */
export const RedisStore = RedisSessionStore as {
  new (redis: RedisClient, options: RedisStoreOptions & { userIndex?: true }): RedisSessionStore & SessionIndex;
  new (redis: RedisClient, options: RedisStoreOptions): RedisSessionStore;
};
export type RedisStore = RedisSessionStore;
