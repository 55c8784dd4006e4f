/** The user's platform connections; the active one is part of the session context. */
import Router from '@koa/router';
import { QueryTypes } from 'sequelize';
import { z } from 'zod';
import type { Models } from '../../db/models.js';
import type { AppDeps } from '../deps.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { publicPlatform } from '../users.js';
import { csrfField, idParam, name, parseBody } from '../validation.js';
import { requireSession } from './auth.js';

const platformInput = z
  .object({
    name,
    type: z.string({ error: 'Enter a type' }).trim().min(1, 'Enter a type').max(40, 'Type is too long').regex(/^[\p{L}\p{N} ._-]+$/u, 'Use letters, digits, spaces, dots, dashes or underscores'),
    ...csrfField,
  })
  .strict();

type NewPlatform = { userId: number; name: string; type: string };

/**
 * Creates the platform unless the user already has `max`: the platform, or null. The count and
 * the insert are one step, so a burst of creates by one user (parallel requests, several
 * instances) cannot together go past the limit. SQLite: one statement, which counts and inserts
 * in one snapshot while holding the database's only write lock (no transaction: Sequelize opens
 * another connection for each, without the shared one's busy_timeout). PostgreSQL: a transaction
 * that first takes an advisory lock of the user's, so one user's creates take turns, and then
 * counts in a statement that sees what they committed. Not a lock of the user's row: an admin
 * disabling the user waited behind a burst of their creates, and past LOCK_TIMEOUT_MS got 503.
 */
const PLATFORM_CREATES = 0x706c6174; // the advisory lock's first key: 'plat', this lock's own space
async function createWithinLimit(models: Models, p: NewPlatform, max: number): Promise<{ id: number; name: string; type: string } | null> {
  const { sequelize, PlatformConnection } = models;
  if (sequelize.getDialect() === 'postgres') {
    return sequelize.transaction(async (transaction) => {
      await sequelize.query('SELECT pg_advisory_xact_lock(?, ?)', { replacements: [PLATFORM_CREATES, p.userId], type: QueryTypes.SELECT, transaction });
      if ((await PlatformConnection.count({ where: { userId: p.userId }, transaction })) >= max) return null;
      return PlatformConnection.create(p, { transaction });
    });
  }
  const now = new Date();
  const [id, inserted] = (await sequelize.query(
    'INSERT INTO platform_connections (user_id, name, type, created_at, updated_at) SELECT ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM platform_connections WHERE user_id = ?) < ?',
    { replacements: [p.userId, p.name, p.type, now, now, p.userId, max], type: QueryTypes.INSERT },
  )) as unknown as [number, number];
  return inserted === 1 ? { id, name: p.name, type: p.type } : null;
}

/**
 * Each user's creates one at a time on this instance, before any takes a pooled connection:
 * waiting on the user's advisory lock, each held one (a burst of 50 by one user took 8 of the 10,
 * and everybody's requests slowed). Across instances the lock still orders them.
 */
class CreatesPerUser {
  private readonly last = new Map<number, Promise<unknown>>();

  inTurn<T>(userId: number, work: () => Promise<T>): Promise<T> {
    const run = (this.last.get(userId) ?? Promise.resolve()).then(work);
    const settled = run.catch(() => undefined);
    this.last.set(userId, settled);
    void settled.then(() => {
      if (this.last.get(userId) === settled) this.last.delete(userId);
    });
    return run;
  }
}

export function platformRoutes({ models, config }: AppDeps) {
  const router = new Router();
  const creates = new CreatesPerUser();

  router.get('/api/platforms', async (ctx) => {
    const session = requireSession(ctx);
    const rows = await models.PlatformConnection.findAll({ where: { userId: session.data.user.id }, order: [['id', 'ASC']] });
    ctx.body = { platforms: rows.map((p) => publicPlatform(p, session.data.platformId)) };
  });

  router.post('/api/platforms', async (ctx) => {
    const session = requireSession(ctx);
    const input = parseBody(ctx, platformInput);
    const max = config.platformsMaxPerUser;
    const userId = session.data.user.id;
    const platform = await creates.inTurn(userId, () => createWithinLimit(models, { userId, name: input.name, type: input.type }, max));
    if (!platform) {
      // Not a field's fault: under `_`, which the form shows above its fields (with or without JavaScript).
      const message = `You have reached the limit of ${max} platforms per account`;
      throw new InvalidInputError(message, { _: message });
    }
    ctx.status = 201;
    ctx.body = { platform: publicPlatform(platform, session.data.platformId) };
  });

  router.post('/api/platforms/:id/activate', async (ctx) => {
    const session = requireSession(ctx);
    const id = idParam(ctx.params.id);
    const platform = id === undefined ? null : await models.PlatformConnection.findOne({ where: { id, userId: session.data.user.id } });
    if (!platform) throw new NotFoundError('No such platform');
    session.set('platformId', platform.id);
    session.set('platform', { id: platform.id, name: platform.name, type: platform.type });
    ctx.body = { platform: publicPlatform(platform, platform.id) };
  });

  return router;
}
