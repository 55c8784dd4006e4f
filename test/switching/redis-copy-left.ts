/**
 * Steps shared by the tests of a Redis copy left live beside a session that went on elsewhere
 * (landed-save-follows-move, redis-read-failed-copy-left; move-into-redis-entry-stalled reads with
 * every cookie too): a tab's request sent with the cookie naming Redis saves on that copy, and
 * every cookie the browser may keep must read its change.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { BackendName } from '../../src/config/config.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';

export function redisCopyLeft(core: () => Core) {
  /** What SessionWriter does with a changed session and the flag saying `target` (session-write.ts: `write`). */
  function written(changed: SessionRecord, concurrency: ReturnType<typeof patched>['concurrency'], target: BackendName) {
    const leavesCookie = changed.heldBy === 'cookie' && target !== 'cookie';
    if (target === changed.backend && !leavesCookie) return core().backends.update(changed, 'save', concurrency);
    const { heldBy: _heldBy, ...held } = changed;
    const from = leavesCookie ? { ...held, backend: 'cookie' as const } : changed;
    return core().backends.migrate(from, target, 'flag', concurrency, Date.now());
  }

  /** A session created in Redis with preferences { w0: 0 }. */
  function inRedis() {
    return core().backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'redis'), 'redis');
  }

  /** A tab's request sent with the cookie naming Redis, told `told`, changes t: 2; then every cookie the browser may keep reads every change. */
  async function tabThenEveryCookieReads(redisCookie: string, told: BackendName, answered: [string, string][], expected: Record<string, number>) {
    const tab = (await core().backends.open(redisCookie))!;
    const two = patched(tab, { t: 2 });
    const third = (await written(two.changed, two.concurrency, told))!;
    expect(third, "the tab's save answered").to.not.equal(undefined);
    const cookies: [string, string][] = [...answered, ["the tab's request", third.cookieValue], ['a request sent with the cookie naming Redis', redisCookie]];
    await everyCookieReads(cookies, { ...expected, t: 2 }, ` (tab served ${JSON.stringify(tab.data.preferences)} from ${tab.backend})`);
  }

  /** Each cookie the browser may keep (`[whose answer set it, its value]`; none when it set none) opens the session with exactly `expected` as its preferences. */
  async function everyCookieReads(cookies: [string, string | undefined][], expected: Record<string, number>, context = '') {
    for (const [which, cookieValue] of cookies) {
      if (cookieValue === undefined) continue;
      const now = (await core().backends.open(cookieValue))!;
      expect(now.data.preferences, `read with the cookie of ${which}${context}`).to.deep.equal(expected);
    }
  }

  return { written, inRedis, tabThenEveryCookieReads, everyCookieReads };
}
