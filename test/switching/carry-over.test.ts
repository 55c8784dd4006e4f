/**
 * A move out of the cookie by a request that read an older cookie carries over what other
 * requests sealed since (CookieStore.evict's newer seal: SessionBackends.carryOver). When the
 * moved copy has changed again before that carry-over is saved (another request, which read the
 * newer seal, moved the session itself and changed the same preference), the carry-over must not
 * write the older value over the later one: that change was answered 200 and read since.
 * (Found with readers and a writer sharing one cookie jar while the flag flipped every 150 ms: a
 * GET holding an older cookie wrote a counter six changes old over the session.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a move out of the cookie carrying over a newer seal', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  /**
   * A session in the cookie with preferences `before`, read by a request (`oldRead`), then
   * changed to counter 1 by another, sealed: the newer seal the first request's move will find.
   */
  async function readThenSealed(before: Record<string, unknown>) {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: before } }, 'cookie'), 'cookie');
    const oldRead = (await core.backends.open(created.cookieValue))!;
    const one = patched(oldRead, { counter: 1 });
    const sealed = (await core.backends.update(one.changed, 'save', one.concurrency))!;
    expect(sealed.record.backend).to.equal('cookie');
    return { id: created.record.id, oldRead, sealed };
  }

  /** Moves `read` to the database, running `meanwhile` once its eviction from the cookie has found what to carry over. */
  async function moveWithCarryOverHeld(read: SessionRecord, meanwhile: () => Promise<void>) {
    const cookie = core.backends.stores.cookie;
    const evict = cookie.evict.bind(cookie);
    let first = true;
    cookie.evict = async (r) => {
      if (!first) return evict(r);
      first = false;
      try {
        return await evict(r);
      } finally {
        await meanwhile();
      }
    };
    try {
      return await core.backends.migrate(read, 'database');
    } finally {
      cookie.evict = evict;
    }
  }

  const inDatabase = async (id: string) => (await core.backends.open(core.backends.cookieValue('database', id)))!;

  it('does not write the carried-over value over a later change of the same preference', async () => {
    // A GET reads the session with the browser's cookie of that moment, while the writer's PATCH
    // (counter 1) is sealed into the cookie.
    const { id, oldRead, sealed } = await readThenSealed({ counter: 0, theme: 'dark' });
    // The flag says database now. The GET moves the session there; its eviction from the cookie
    // finds the newer seal (counter 1) to carry over. Just then the next PATCH, sent with the
    // newer cookie, moves the session to the database itself with counter 2 (answered 200).
    let later: Awaited<ReturnType<typeof core.backends.migrate>>;
    const moved = await moveWithCarryOverHeld(oldRead, async () => {
      const read = (await core.backends.open(sealed.cookieValue))!;
      expect(read.data.preferences).to.deep.include({ counter: 1 });
      const two = patched(read, { counter: 2 });
      later = await core.backends.migrate(two.changed, 'database', 'flag', two.concurrency);
    });
    expect(later?.record.backend).to.equal('database');
    expect(later!.record.data.preferences).to.deep.include({ counter: 2 });
    expect(moved?.record.backend).to.equal('database');
    expect((await inDatabase(id)).data.preferences, 'counter 2 was answered last').to.deep.equal({ counter: 2, theme: 'dark' });
  });

  it('still carries over a newer seal whose change nobody has overwritten since', async () => {
    const { id, oldRead } = await readThenSealed({ counter: 0 });
    // The moved copy changes before the carry-over lands, in another preference.
    await moveWithCarryOverHeld(oldRead, async () => {
      const theme = patched(await inDatabase(id), { theme: 'light' });
      await core.backends.update(theme.changed, 'save', theme.concurrency);
    });
    expect((await inDatabase(id)).data.preferences).to.deep.equal({ counter: 1, theme: 'light' });
  });
});
