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
import { Op } from 'sequelize';
import type { Models } from './models.js';

const DEPLOYMENT_ID = 'deployment_id';
const UNBOUND_COOKIES_BEFORE = 'unbound_cookies_before';
const UNSIGNED_IDS_BEFORE = 'unsigned_ids_before';
const SIGNING_RELEASE_SEEN_AT = 'signing_release_seen_at';

/** How often a running instance says so (`noteSigningRelease`). */
export const SIGNING_RELEASE_NOTE_MS = 60 * 1000;
/**
 * Sessions issued this long after the last such note were issued while no instance of a
 * signing release ran: an older release was serving alone (a rollback). Two notes' worth and a
 * minute for clocks apart.
 */
const OLDER_RELEASE_GAP_MS = 2 * SIGNING_RELEASE_NOTE_MS + 60 * 1000;

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
export async function unsignedIdsBefore(models: Pick<Models, 'Setting' | 'SessionRow'>, now = Date.now()): Promise<number> {
  const cutoff = await upgradeCutoff(models, UNSIGNED_IDS_BEFORE, now);
  if (cutoff === 0) return 0;
  // An upgrade rolled back once its hour had passed, and tried again: the older release, serving
  // alone meanwhile, issued unsigned cookies that this one would refuse, and during this rolling
  // upgrade its instances cannot read signed ones. So the hour starts again, as at the first try.
  const seen = await models.Setting.findByPk(SIGNING_RELEASE_SEEN_AT);
  if (seen && now >= cutoff && Number(seen.value) + OLDER_RELEASE_GAP_MS < now) {
    // A session issued or used since (a login, or a touch of a session's idle expiry): served.
    const after = Number(seen.value) + OLDER_RELEASE_GAP_MS;
    const servedMeanwhile = await models.SessionRow.findOne({ attributes: ['issuedAt'], where: { [Op.or]: [{ issuedAt: { [Op.gt]: after } }, { lastActivity: { [Op.gt]: after } }] } });
    // Instances starting together: the first to write it wins.
    if (servedMeanwhile) await models.Setting.update({ value: String(now + ROLLING_UPGRADE_MS) }, { where: { name: UNSIGNED_IDS_BEFORE, value: String(cutoff) } });
  }
  // Not fatal: a database that takes no writes now (read-only, its disk full) still serves reads.
  await noteSigningRelease(models, now).catch(() => undefined);
  // Read again, after the note: an instance that started with this one and saw the gap has
  // written its new hour before its note, which this one may have read above as no gap.
  return Number((await models.Setting.findByPk(UNSIGNED_IDS_BEFORE, { rejectOnEmpty: true })).value);
}

/**
 * That an instance of a release signing ids runs now (every SIGNING_RELEASE_NOTE_MS): sessions
 * issued long after the last note were issued by an older release alone (`unsignedIdsBefore`).
 */
export async function noteSigningRelease(models: Pick<Models, 'Setting'>, now = Date.now()): Promise<void> {
  await models.Setting.upsert({ name: SIGNING_RELEASE_SEEN_AT, value: String(now) });
}

/** The setting `name`, set on first reading to ROLLING_UPGRADE_MS from now (the first instance to write it wins). */
async function upgradeCutoff(models: Pick<Models, 'Setting'>, name: string, now: number): Promise<number> {
  const known = await models.Setting.findByPk(name);
  if (known) return Number(known.value);
  await models.Setting.bulkCreate([{ name, value: String(now + ROLLING_UPGRADE_MS) }], { ignoreDuplicates: true });
  return Number((await models.Setting.findByPk(name, { rejectOnEmpty: true })).value);
}
