/**
 * The deployment: the instances that share one database. Its id is drawn once, by whichever
 * instance starts first, and kept in the `settings` table, so every instance of the deployment
 * reads the same one and no other deployment has it.
 *
 * What it is for: instances tell each other of revocations and override changes over Redis
 * pub/sub (sessions/instance-channel.ts), and a pub/sub channel spans every numbered database
 * of a Redis server. Without the id in the channel's name, two deployments on one Redis with
 * the same REDIS_KEY_PREFIX — a staging and a test server on /1 and /2, say — would apply each
 * other's logouts, revoke-alls and overrides.
 */
import { randomBytes } from 'node:crypto';
import type { Models } from './models.js';

const DEPLOYMENT_ID = 'deployment_id';
const UNBOUND_COOKIES_BEFORE = 'unbound_cookies_before';
const UNSIGNED_IDS_BEFORE = 'unsigned_ids_before';

/** How long after a deployment first runs a release that binds cookies its older instances may still seal unbound ones. */
export const ROLLING_UPGRADE_MS = 60 * 60 * 1000;

export async function deploymentId(models: Pick<Models, 'Setting' | 'SessionRow'>): Promise<string> {
  const known = await models.Setting.findByPk(DEPLOYMENT_ID);
  if (known) return known.value;
  // Two instances starting at once may both get here: the first insert wins, and both read it.
  // A deployment drawn now on an empty sessions table never had cookies sealed before keys were
  // bound to it, nor unsigned ids. One with sessions is a release older than the deployment id
  // upgrading: its cutoffs are set on first reading, as for any deployment upgrading.
  const fresh = (await models.SessionRow.count()) === 0;
  await models.Setting.bulkCreate(
    [
      { name: DEPLOYMENT_ID, value: randomBytes(9).toString('base64url') },
      ...(fresh
        ? [
            { name: UNBOUND_COOKIES_BEFORE, value: '0' },
            { name: UNSIGNED_IDS_BEFORE, value: '0' },
          ]
        : []),
    ],
    { ignoreDuplicates: true },
  );
  return (await models.Setting.findByPk(DEPLOYMENT_ID, { rejectOnEmpty: true })).value;
}

/**
 * Session cookies sealed before keys were bound to the deployment (sessions/cookie-store.ts)
 * open only if issued before this instant (ms): an hour after the deployment first ran a release
 * that binds them (a rolling upgrade's older instances still seal unbound cookies meanwhile), or
 * 0 for a deployment that never had any. Without it, a staging copy on an older release, given
 * production's secrets, could still issue cookies that production opens as its own users'.
 */
export function unboundCookiesBefore(models: Pick<Models, 'Setting'>, now = Date.now()): Promise<number> {
  return upgradeCutoff(models, UNBOUND_COOKIES_BEFORE, now);
}

/**
 * Database and Redis session cookies without a signature (sessions/session-cookie-value.ts)
 * open only for sessions issued before this instant (ms): as for unbound cookies, an hour after
 * the deployment first ran a release that signs them, or 0 for a deployment that never had any.
 */
export function unsignedIdsBefore(models: Pick<Models, 'Setting'>, now = Date.now()): Promise<number> {
  return upgradeCutoff(models, UNSIGNED_IDS_BEFORE, now);
}

/** The setting `name`, set on first reading to ROLLING_UPGRADE_MS from now (the first instance to write it wins). */
async function upgradeCutoff(models: Pick<Models, 'Setting'>, name: string, now: number): Promise<number> {
  const known = await models.Setting.findByPk(name);
  if (known) return Number(known.value);
  await models.Setting.bulkCreate([{ name, value: String(now + ROLLING_UPGRADE_MS) }], { ignoreDuplicates: true });
  return Number((await models.Setting.findByPk(name, { rejectOnEmpty: true })).value);
}
