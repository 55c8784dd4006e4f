/**
 * A cookie naming the database (or Redis) after the session moved into a sealed cookie — the
 * answer of a tab's request that came after the move's — reads the session's directory entry:
 * the cookie's copy, written behind its seals. Served as it stood, it lacked a change another
 * tab had just sealed, answered 200 (bench:flips: stale reads with `d.` and `r.` cookies).
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a cookie naming the database for a session a sealed cookie holds', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('reads the session with the changes sealed on this instance', async () => {
    const backends = core.backends;
    const created = await backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { a: 0 } } }, 'cookie'), 'cookie');
    const a = patched((await backends.open(created.cookieValue))!, { a: 1 });
    expect((await backends.update(a.changed, 'save', a.concurrency))?.record.backend).to.equal('cookie');
    const read = (await backends.open(backends.cookieValue('database', created.record.id)))!;
    expect(read.heldBy).to.equal('cookie');
    expect(read.data.preferences, 'the save was answered 200 before the read').to.deep.equal({ a: 1 });
  });
});
