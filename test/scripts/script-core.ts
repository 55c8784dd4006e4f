/**
 * The stores the operator scripts under test work on, opened in the test's own process to fill
 * them and to check what a script did. Its Redis keys live under the test's own
 * REDIS_KEY_PREFIX on the shared Redis, and only those are removed when it closes.
 */
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';

export function openScriptCore(env: Record<string, string>): Promise<Core> {
  return openCore(loadConfig(env), pino({ level: 'silent' }));
}

export async function closeScriptCore(core: Core | undefined, keyPrefix: string): Promise<void> {
  const redis = core?.redis;
  if (redis && 'keys' in redis) {
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length) await redis.del(...keys);
  }
  await core?.close();
}
