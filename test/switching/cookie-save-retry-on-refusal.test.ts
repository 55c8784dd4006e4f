/**
 * A save refused by the cookie store comes with the seal that refused it, and is retried on top of
 * it. Retried after the little wait that keeps writers on a shared store out of lockstep, it was
 * retried on a seal that the session's other tabs had already sealed past meanwhile (their saves
 * wait for nothing): refused again, every time, until its tries ran out — 409 session_conflict for
 * a change that a retry at once would have merged. (Found with five writers and a reader per
 * session while the flag flipped every 100–150 ms among all three backends: about one change in
 * 10,000 answered 409, every one after 21 refusals by newer seals.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import { SessionConflictError } from '../../src/sessions/errors.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a cookie save refused while other tabs keep sealing', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('is answered 200, and the cookie of the last answer reads every change', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
    // The PATCH (theme) reads the session.
    const read = (await core.backends.open(created.cookieValue))!;
    // The other tabs' PATCHes, one after another, each with the cookie of the one before.
    let lastOther: Written = created;
    let counter = 0;
    const otherTab = async () => {
      const other = patched((await core.backends.open(lastOther.cookieValue))!, { counter: ++counter });
      lastOther = (await core.backends.update(other.changed, 'save', other.concurrency))!;
    };
    const cookie = core.backends.stores.cookie;
    const save = cookie.save.bind(cookie);
    const isThePatch = (r: SessionRecord) => (r.data.preferences as Record<string, unknown>).theme === 'light';
    let tries = 0;
    let answered = false;
    const scheduled: Promise<void>[] = [];
    cookie.save = async (r, expected) => {
      if (!isThePatch(r) || answered) return save(r, expected);
      // The first three tries: another tab seals just before each (refused at once, as after a follow).
      if (++tries <= 3) await otherTab();
      try {
        return await save(r, expected);
      } catch (err) {
        // From then on another tab seals as soon as this event-loop turn is over, after each refusal.
        if (err instanceof SessionConflictError && tries >= 3 && counter < 40) scheduled.push(new Promise((resolve) => setImmediate(() => resolve(otherTab()))));
        throw err;
      }
    };
    let saved: Written | Error;
    try {
      const mine = patched(read, { theme: 'light' });
      saved = await core.backends.update(mine.changed, 'save', mine.concurrency).then((w) => w!, (err: Error) => err);
      answered = true;
      await Promise.all(scheduled);
    } finally {
      cookie.save = save;
    }
    expect(saved, 'the PATCH is answered 200, not 409').to.not.be.instanceOf(Error);
    // The browser keeps the cookie of the last answer (another tab's, after the PATCH's), and its own.
    const last = await core.backends.open(lastOther.cookieValue);
    expect(last?.data.preferences, 'the session by the cookie of the last answer').to.deep.equal({ counter, theme: 'light' });
    const own = await core.backends.open((saved as Written).cookieValue);
    expect(own?.data.preferences, "the session by the PATCH's cookie").to.deep.equal({ counter, theme: 'light' });
  });
});
