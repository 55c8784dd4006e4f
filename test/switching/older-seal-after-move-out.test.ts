/**
 * A request sent with a sealed cookie older than a move out of the cookie (the browser had not yet
 * been given the move's cookie) is served the session where the move put it. (Found tracing one
 * cookie jar with a writer and two readers while the flag flipped: a GET that set off with the
 * cookie of a moment before a PATCH moved the session out of the cookie was answered from its
 * seal, one change old, though that PATCH had been answered 200.)
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Core } from '../../src/core.js';
import type { BackendName } from '../../src/config/config.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

const TO_REDIS = { REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `older-seal-${randomBytes(4).toString('hex')}:` };

for (const target of ['database', 'redis'] as const satisfies readonly BackendName[]) {
  describe(`a sealed cookie older than a move out of the cookie into ${target}`, function () {
    this.timeout(60_000);
    const lagging = laggingCookieCore(target === 'redis' ? TO_REDIS : {});
    let core: Core;
    before(() => {
      core = lagging();
    });

    /** A session sealed at counter 0, then moved into `target` by a PATCH to counter 1. */
    async function movedOut() {
      const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
      const one = patched((await core.backends.open(created.cookieValue))!, { counter: 1 });
      const moved = (await core.backends.migrate(one.changed, target, 'flag', one.concurrency))!;
      expect(moved.record.backend).to.equal(target);
      return { older: created.cookieValue, moved };
    }

    it('is served from where the session went, with the change the move made', async () => {
      const { older, moved } = await movedOut();
      const read = await core.backends.open(older);
      expect(read?.backend, `served from ${target}`).to.equal(target);
      expect(read!.data.preferences, 'the PATCH answered 200 is seen').to.deep.equal({ counter: 1 });
      expect(read!.version).to.equal(moved.record.version);
    });

    it('takes a change where the session went, on top of the move', async () => {
      const { older } = await movedOut();
      const read = (await core.backends.open(older))!;
      const two = patched(read, { theme: 'light' });
      const saved = await core.backends.update(two.changed, 'save', two.concurrency);
      expect(saved?.record.backend).to.equal(target);
      const now = await core.backends.open(core.backends.cookieValue(target, read.id));
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

    if (target === 'database') {
      it('is served from its seal, not held, when the database does not answer', async () => {
        const { older } = await movedOut();
        // The database stalls: what the read asks of it is never answered. Asked through the
        // database backend's deadline, the read is answered from the seal; asked past it, the
        // read waited as long as the database (30 s, pg's query_timeout).
        const directory = core.backends.directory;
        const [load, loadByHash] = [directory.load, directory.loadByHash];
        directory.load = directory.loadByHash = () => new Promise(() => {});
        try {
          const read = await core.backends.open(older);
          expect(read).to.deep.include({ backend: 'cookie', movedOut: true });
          expect(read!.data.preferences).to.deep.equal({ counter: 0 });
        } finally {
          Object.assign(directory, { load, loadByHash });
        }
      });
    }
  });
}
