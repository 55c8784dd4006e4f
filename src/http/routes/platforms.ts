/** The user's platform connections; the active one is part of the session context. */
import Router from '@koa/router';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { NotFoundError } from '../errors.js';
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

export function platformRoutes({ models }: AppDeps) {
  const router = new Router();

  router.get('/api/platforms', async (ctx) => {
    const session = requireSession(ctx);
    const rows = await models.PlatformConnection.findAll({ where: { userId: session.data.user.id }, order: [['id', 'ASC']] });
    ctx.body = { platforms: rows.map((p) => publicPlatform(p, session.data.platformId)) };
  });

  router.post('/api/platforms', async (ctx) => {
    const session = requireSession(ctx);
    const input = parseBody(ctx, platformInput);
    const platform = await models.PlatformConnection.create({ userId: session.data.user.id, name: input.name, type: input.type });
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
