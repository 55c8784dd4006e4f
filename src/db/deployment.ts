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

export async function deploymentId(models: Pick<Models, 'Setting'>): Promise<string> {
  const known = await models.Setting.findByPk(DEPLOYMENT_ID);
  if (known) return known.value;
  // Two instances starting at once may both get here: the first insert wins, and both read it.
  await models.Setting.bulkCreate([{ name: DEPLOYMENT_ID, value: randomBytes(9).toString('base64url') }], { ignoreDuplicates: true });
  return (await models.Setting.findByPk(DEPLOYMENT_ID, { rejectOnEmpty: true })).value;
}
