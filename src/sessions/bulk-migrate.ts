/**
 * Moves every session held by one server-side backend into another, without waiting for
 * traffic: the operator's tool for finishing a rollout (scripts/sessions-migrate.ts).
 *
 * Walks the database directory of sessions held by `from`, in id-hash order, a batch at a
 * time; each session is written to `to` before it is removed from `from` (as on the request
 * path), so an interrupted run loses nothing and a rerun from the saved cursor resumes.
 * Cookie-held sessions live in browsers: they cannot be moved from the server, and move on
 * their next request instead.
 */
import type { SessionBackends } from './backends.js';
import type { DatabaseStore } from './database-store.js';
import type { RedisStore } from './redis-store.js';
import { movedVersion, type SessionRecord } from './session.js';

export type ServerSideBackend = 'database' | 'redis';

export interface BulkMigrateOptions {
  from: ServerSideBackend;
  to: ServerSideBackend;
  batchSize: number;
  dryRun: boolean;
  /** Resume after this id hash ('' from the start). */
  cursor: string;
  onBatch?: (progress: { moved: number; skipped: number; cursor: string }) => void | Promise<void>;
}

export async function bulkMigrate(
  backends: SessionBackends,
  raw: { database: DatabaseStore; redis: RedisStore },
  options: BulkMigrateOptions,
): Promise<{ moved: number; skipped: number; cursor: string }> {
  if (options.from === options.to) throw new Error('from and to must differ');
  let { cursor } = options;
  let moved = 0;
  let skipped = 0;
  for (;;) {
    const page = await raw.database.scan(options.from, cursor, options.batchSize);
    if (page.length === 0) break;
    for (const listed of page) {
      cursor = listed.idHash;
      // Read again just before the move, as a request would: the page was listed a while ago,
      // and users may have changed their session since (a move of the page's copy would
      // overwrite that), or traffic may have moved it already (then it is not ours to move).
      const current = await raw.database.loadByHash(listed.idHash);
      if (!current || current.backend !== options.from) continue;
      // Redis holds the freshest copy of its sessions; the directory row may lag by a touch.
      const record: SessionRecord = options.from === 'redis' ? ((await raw.redis.loadByHash(listed.idHash)) ?? current) : current;
      if (backends.revocations.isRevoked(record)) {
        // Never served again: not moved, and removed, so that the source ends up empty.
        if (!options.dryRun) await backends.stores[options.from].destroy({ ...record, backend: options.from });
        skipped++;
        continue;
      }
      if (!options.dryRun) {
        // As on the request path (SessionBackends.move): the next version (out of Redis, a step on: session.ts), written only if the
        // session is still as read, and the source's copy removed only if it is still that one.
        if ((await backends.stores[options.to].moveIn({ ...record, backend: options.to, version: movedVersion(options.from, record.version) }, record.version)) === undefined) continue;
        await backends.stores[options.from].evict({ ...record, backend: options.from });
      }
      moved++;
    }
    await options.onBatch?.({ moved, skipped, cursor });
  }
  return { moved, skipped, cursor };
}
