/**
 * A request sent with a sealed cookie older than a move out of the cookie (the browser had not yet
 * been given the move's cookie) is served the session where the move put it. (Found tracing one
 * cookie jar with a writer and two readers while the flag flipped: a GET that set off with the
 * cookie of a moment before a PATCH moved the session into the database was answered from its
 * seal, one change old, though that PATCH had been answered 200.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a sealed cookie older than a move out of the cookie', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  /** A session sealed at counter 0, then moved into the database by a PATCH to counter 1. */
  async function movedOut() {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
    const one = patched((await core.backends.open(created.cookieValue))!, { counter: 1 });
    const moved = (await core.backends.migrate(one.changed, 'database', 'flag', one.concurrency))!;
    expect(moved.record.backend).to.equal('database');
    return { older: created.cookieValue, moved };
  }

  it('is served from where the session went, with the change the move made', async () => {
    const { older, moved } = await movedOut();
    const read = await core.backends.open(older);
    expect(read?.backend, 'served from the database').to.equal('database');
    expect(read!.data.preferences, 'the PATCH answered 200 is seen').to.deep.equal({ counter: 1 });
    expect(read!.version).to.equal(moved.record.version);
  });

  it('takes a change where the session went, on top of the move', async () => {
    const { older } = await movedOut();
    const read = (await core.backends.open(older))!;
    const two = patched(read, { theme: 'light' });
    const saved = await core.backends.update(two.changed, 'save', two.concurrency);
    expect(saved?.record.backend).to.equal('database');
    const now = await core.backends.open(core.backends.cookieValue('database', read.id));
    expect(now!.data.preferences).to.deep.equal({ counter: 1, theme: 'light' });
  });

  it('is served from its seal once the session has moved back into the cookie here', async () => {
    const { older, moved } = await movedOut();
    const back = patched((await core.backends.open(moved.cookieValue))!, { counter: 2 });
    const sealed = (await core.backends.migrate(back.changed, 'cookie', 'flag', back.concurrency))!;
    expect(sealed.record.backend).to.equal('cookie');
    // The older cookie is now older than a seal made here: served as that seal (newerThanCookie).
    const read = await core.backends.open(older);
    expect(read).to.deep.include({ backend: 'cookie', newerThanCookie: true });
    expect(read!.data.preferences).to.deep.equal({ counter: 2 });
  });
});
