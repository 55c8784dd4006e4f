/**
 * A move out of the cookie refused by the directory entry, which names the database, marks the
 * cookie moved out, and a seal it finds made since it read the session is carried over once the
 * move has written (SessionBackends.move: `sealed.meanwhile`). Here the entry it read was already
 * old: another tab's move had just brought the session back into the cookie, and a tab had sealed
 * on it. The move then went on — refused, followed — for as long as the session kept moving, and
 * wrote it where it had got to, with every change made since; the seal found at the refusal was
 * then carried over against that write, and the keys it held older values of were put back: a
 * change answered 200 in between was gone. (Traced in bench:flips, flips between cookie and
 * database every 30–60 ms: a request that had waited out MOVE_WAIT_MS carried a seal two seconds
 * old over the session, and a witness key saved in between was lost for good.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

/** `obj[name]` runs `first` once, before its next call goes on. */
function onceBefore<T extends object, K extends keyof T>(obj: T, name: K, first: () => Promise<void>) {
  const original = obj[name] as unknown as (...args: unknown[]) => Promise<unknown>;
  let done = false;
  (obj as Record<K, unknown>)[name] = async (...args: unknown[]) => {
    if (!done) {
      done = true;
      await first();
    }
    return original.apply(obj, args);
  };
  return () => ((obj as Record<K, unknown>)[name] = original);
}

describe('a refused move out of the cookie that carries a seal over once it has written', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  it('does not put back older values over a change answered after that seal', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { r: 0, t: 0, u: 0 } } }, 'cookie'), 'cookie');
    const id = created.record.id;
    const dCookie = core.backends.cookieValue('database', id);
    // R read the seal (version 1) and changes r; then the flag says database.
    const r = patched((await core.backends.open(created.cookieValue))!, { r: 1 });
    // Another tab's request moves the session out of the cookie first (entry 1025, the seal marked).
    const out = (await core.backends.migrate((await core.backends.open(created.cookieValue))!, 'database'))!;
    expect(out.record).to.include({ backend: 'database', version: 1025 });
    let tSealed: string | undefined;
    let uMoved: string | undefined;
    // R's move is refused by that entry and reads it (database, 1025): just after, a tab with the
    // database cookie moves the session back into the cookie (the flag flipped again), and a tab
    // saves t on it. R then marks the cookie moved out, finding t's seal made since it read.
    const directory = core.backends.directory;
    const loadByHash = directory.loadByHash.bind(directory);
    let step = 0;
    directory.loadByHash = async (idHash: string) => {
      const entry = await loadByHash(idHash);
      if (step++ === 0) {
        const back = (await core.backends.migrate((await core.backends.open(dCookie))!, 'cookie'))!;
        const t = patched((await core.backends.open(back.cookieValue))!, { t: 1 });
        tSealed = (await core.backends.update(t.changed, 'save', t.concurrency))!.cookieValue;
        // R's save onto the entry it read is refused (the session is in the cookie again): before
        // it reads where the session went, a tab with the database cookie saves u, which moves the
        // session into the cookie once more.
        restoreLoad = onceBefore(core.backends.stores.database, 'load', async () => {
          const u = patched((await core.backends.open(dCookie))!, { u: 1 });
          uMoved = (await core.backends.migrate(u.changed, 'cookie', 'flag', u.concurrency))!.cookieValue;
        });
      }
      return entry;
    };
    let restoreLoad = () => {};
    let rWritten;
    // R's move comes after the other one has settled (as one that waited MOVE_WAIT_MS for it out,
    // under load): it moves the session itself rather than save on top of where that one put it.
    await new Promise((resolve) => setTimeout(resolve, 5));
    try {
      rWritten = await core.backends.migrate(r.changed, 'database', 'flag', r.concurrency);
    } finally {
      directory.loadByHash = loadByHash;
      restoreLoad();
    }
    expect(tSealed, 't answered').to.be.a('string');
    expect(uMoved, 'u answered').to.be.a('string');
    expect(rWritten, 'r answered').to.not.equal(undefined);
    for (const cookie of [tSealed!, uMoved!, rWritten!.cookieValue]) {
      const now = await core.backends.open(cookie);
      expect(now?.data.preferences, `read with ${cookie.slice(0, 2)}…`).to.deep.equal({ r: 1, t: 1, u: 1 });
    }
  });
});
