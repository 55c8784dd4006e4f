/**
 * Sessions in Redis (ioredis; a single node, Sentinel or Cluster). Redis keeps the expiry.
 *
 * Layout — every command touches one key, so nothing crosses a Cluster slot:
 *   <prefix>s:<hash(id)>  hash: m = metadata JSON, d = data, t = last activity, e = expiry (ms)
 *   <prefix>u:<userId>    sorted set of the user's session hashes, scored by expiry, pruned on read
 */
import { Cluster, type Redis, type Result } from 'ioredis';
import type { BackendName } from '../config/config.js';
import { jsonCodec, type DataCodec } from './codec.js';
import { SessionConflictError } from './errors.js';
import { hashSessionId, type SessionRecord } from './session.js';
import type { IndexedSessionStore } from './store.js';

type RedisClient = Redis | Cluster;

// Write the hash and its expiry in one step; `save`/`touch` only when the session still exists,
// and a save with an expected version only when the stored one matches (-1: conflict).
const WRITE = `
if ARGV[1] == 'update' then
  local m = redis.call('hget', KEYS[1], 'm')
  if not m then return 0 end
  if ARGV[7] ~= '' and cjson.decode(m).v ~= tonumber(ARGV[7]) then return -1 end
end
redis.call('hset', KEYS[1], 'm', ARGV[2], 'd', ARGV[3], 't', ARGV[4], 'e', ARGV[5])
redis.call('pexpire', KEYS[1], ARGV[6])
return 1`;
const TOUCH = `
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], 't', ARGV[1], 'e', ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    sbWrite(key: string, mode: 'create' | 'update', meta: string, data: string, t: number, e: number, ttl: number, expectedVersion: string): Result<number, Context>;
    sbTouch(key: string, t: number, e: number, ttl: number): Result<number, Context>;
  }
}

interface Meta {
  h: string;
  u: number;
  b: BackendName;
  c: number;
  i: number;
  x: number;
  ip: string;
  ua: string;
  v: number;
}

export class RedisStore implements IndexedSessionStore {
  readonly backend = 'redis' as const;

  constructor(
    private readonly redis: RedisClient,
    private readonly options: { keyPrefix: string; absoluteTimeoutMs: number; codec?: DataCodec },
  ) {
    redis.defineCommand('sbWrite', { numberOfKeys: 1, lua: WRITE });
    redis.defineCommand('sbTouch', { numberOfKeys: 1, lua: TOUCH });
  }

  private get codec() {
    return this.options.codec ?? jsonCodec;
  }
  private sessionKey(idHash: string) {
    return `${this.options.keyPrefix}s:${idHash}`;
  }
  private userKey(userId: number) {
    return `${this.options.keyPrefix}u:${userId}`;
  }

  async load(token: string): Promise<SessionRecord | undefined> {
    return this.loadByHash(hashSessionId(token), token);
  }

  /** For operator tools that only know the hash (from the database directory). */
  async loadByHash(idHash: string, id = ''): Promise<SessionRecord | undefined> {
    const [m, d, t, e] = await this.redis.hmget(this.sessionKey(idHash), 'm', 'd', 't', 'e');
    return this.toRecord(id, idHash, m, d, t, e);
  }

  async create(record: SessionRecord): Promise<string> {
    await this.write('create', record);
    return record.id;
  }

  async save(record: SessionRecord, expectedVersion?: number): Promise<string | undefined> {
    const written = await this.write('update', record, expectedVersion);
    if (written === -1) throw new SessionConflictError(expectedVersion ?? 0);
    return written === 1 ? record.id : undefined;
  }

  async touch(record: SessionRecord): Promise<string | undefined> {
    const ttl = record.expiresAt - Date.now();
    if (ttl <= 0) return undefined;
    const [touched] = await Promise.all([
      this.redis.sbTouch(this.sessionKey(record.idHash), record.lastActivity, record.expiresAt, ttl),
      this.redis.zadd(this.userKey(record.userId), 'XX', record.expiresAt, record.idHash),
    ]);
    return touched === 1 ? record.id : undefined;
  }

  async destroy(record: SessionRecord): Promise<void> {
    await Promise.all([this.redis.del(this.sessionKey(record.idHash)), this.redis.zrem(this.userKey(record.userId), record.idHash)]);
  }

  async evict(record: SessionRecord): Promise<void> {
    await this.destroy(record);
  }

  async listByUser(userId: number): Promise<SessionRecord[]> {
    const key = this.userKey(userId);
    await this.redis.zremrangebyscore(key, '-inf', Date.now());
    const hashes = await this.redis.zrange(key, 0, -1);
    const rows = await Promise.all(hashes.map((h) => this.redis.hmget(this.sessionKey(h), 'm', 'd', 't', 'e')));
    const records: SessionRecord[] = [];
    const gone: string[] = [];
    rows.forEach(([m, d, t, e], i) => {
      const record = this.toRecord('', hashes[i]!, m, d, t, e);
      if (record) records.push(record);
      else gone.push(hashes[i]!);
    });
    if (gone.length > 0) await this.redis.zrem(key, ...gone);
    return records.sort((a, b) => a.createdAt - b.createdAt);
  }

  /**
   * On a cluster every master must answer and see the cluster as ok: one down master leaves
   * its slots unserved (and ioredis may already have dropped it from its node list).
   */
  async ping(): Promise<void> {
    if (!(this.redis instanceof Cluster)) {
      await this.redis.ping();
      return;
    }
    const masters = this.redis.nodes('master');
    if (masters.length === 0) throw new Error('no Redis Cluster master reachable');
    await Promise.all(
      masters.map(async (node) => {
        const info = String(await node.cluster('INFO'));
        if (!info.includes('cluster_state:ok')) throw new Error('Redis Cluster state is not ok');
      }),
    );
  }

  async close(): Promise<void> {
    // The client belongs to the application, which quits it.
  }

  /** 1 written, 0 missing (not written), -1 version conflict. */
  private async write(mode: 'create' | 'update', r: SessionRecord, expectedVersion?: number): Promise<number> {
    const ttl = r.expiresAt - Date.now();
    if (ttl <= 0) return 0;
    const meta: Meta = { h: r.handle, u: r.userId, b: r.backend, c: r.createdAt, i: r.issuedAt, x: r.absoluteExpiresAt, ip: r.ip, ua: r.userAgent, v: r.version };
    const userKey = this.userKey(r.userId);
    const [written] = await Promise.all([
      this.redis.sbWrite(this.sessionKey(r.idHash), mode, JSON.stringify(meta), this.codec.encode(r.data), r.lastActivity, r.expiresAt, ttl, expectedVersion === undefined ? '' : String(expectedVersion)),
      // The index lives as long as the longest session it can hold.
      this.redis.zadd(userKey, r.expiresAt, r.idHash).then(() => this.redis.pexpire(userKey, this.options.absoluteTimeoutMs)),
    ]);
    return written;
  }

  private toRecord(id: string, idHash: string, ...fields: Array<string | null | undefined>): SessionRecord | undefined {
    const [m, d, t, e] = fields;
    if (m == null || d == null || t == null || e == null) return undefined;
    const expiresAt = Number(e);
    if (expiresAt <= Date.now()) return undefined;
    const data = this.codec.decode(d);
    if (!data) return undefined;
    let meta: Meta;
    try {
      meta = JSON.parse(m) as Meta;
    } catch {
      return undefined;
    }
    return {
      id,
      idHash,
      handle: meta.h,
      userId: meta.u,
      backend: meta.b,
      data,
      createdAt: meta.c,
      issuedAt: meta.i,
      lastActivity: Number(t),
      expiresAt,
      absoluteExpiresAt: meta.x,
      ip: meta.ip,
      userAgent: meta.ua,
      version: meta.v,
    };
  }
}
