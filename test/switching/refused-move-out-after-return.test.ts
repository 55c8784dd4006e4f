/**
 * A move out of the cookie refused by the directory entry reads where the session went, and marks
 * the seal it read moved out when the entry names another holder (its tabs' saves are refused, and
 * follow the session). The entry it reads may be old already: the session has come back into the
 * cookie since (another tab's move, at a version past that entry), and a tab has sealed on it.
 * Marked moved out then, the live session's seals were refused to every save — the mover's own
 * and every tab's, each answered 409 after its tries — until a later move into the cookie replaced
 * the mark (or LATEST_SEAL_MS passed), and the tab's copy waiting to be written was dropped.
 * (Left by the forty-fourth round; bench:flips between cookie and database every 30–60 ms.)
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a refused move out of the cookie that reads an entry older than the session’s return', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  /**
   * R read the seal (version 1): `rMoves` moves it into the database, its changes or none. Another
   * tab's request moves the session out of the cookie first (entry 1025, the seal marked). R's move
   * is refused by that entry and reads it (database, 1025): just after, a tab with the database
   * cookie moves the session back into the cookie (1026; the flag flipped again), and tab T saves
   * t on it (1027, its copy waiting). R then finds the entry naming the database. Then T saves v.
   */
  async function refusedAfterReturn(rMoves: (read: ReturnType<typeof patched>) => Promise<Written | undefined>) {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { r: 0, t: 0, v: 0 } } }, 'cookie'), 'cookie');
    const dCookie = core.backends.cookieValue('database', created.record.id);
    const r = patched((await core.backends.open(created.cookieValue))!, { r: 1 });
    const out = (await core.backends.migrate((await core.backends.open(created.cookieValue))!, 'database'))!;
    expect(out.record).to.include({ backend: 'database', version: 1025 });
    let tSealed: string | undefined;
    const directory = core.backends.directory;
    const loadByHash = directory.loadByHash.bind(directory);
    let step = 0;
    directory.loadByHash = async (idHash: string) => {
      const entry = await loadByHash(idHash);
      if (step++ === 0) {
        const back = (await core.backends.migrate((await core.backends.open(dCookie))!, 'cookie'))!;
        expect(back.record).to.include({ backend: 'cookie', version: 1026 });
        const t = patched((await core.backends.open(back.cookieValue))!, { t: 1 });
        tSealed = (await core.backends.update(t.changed, 'save', t.concurrency))!.cookieValue;
      }
      return entry;
    };
    // R's move comes after the other one has settled (as one that waited MOVE_WAIT_MS for it out,
    // under load): it moves the session itself rather than save on top of where that one put it.
    await new Promise((resolve) => setTimeout(resolve, 5));
    let rWritten;
    try {
      rWritten = await rMoves(r).catch((err: Error) => err);
    } finally {
      directory.loadByHash = loadByHash;
    }
    expect(step, 'R read the entry after its refusal').to.be.greaterThan(0);
    expect(tSealed, 't answered').to.be.a('string');
    expect(rWritten, 'R answered, not refused (409)').to.not.be.instanceOf(Error).and.to.not.equal(undefined);
    // Read with R's cookie before anything else is saved: t's copy, still waiting, goes first.
    expect((await core.backends.open((rWritten as Written).cookieValue))?.data.preferences, 'read with R’s cookie').to.include({ t: 1 });
    // T's next change, on the seal it was given.
    const v = patched((await core.backends.open(tSealed!))!, { v: 1 });
    const vSaved = await core.backends.update(v.changed, 'save', v.concurrency).catch((err: Error) => err);
    expect(vSaved, 'v answered, not refused (409)').to.not.be.instanceOf(Error).and.to.not.equal(undefined);
    return [tSealed!, (rWritten as Written).cookieValue, (vSaved as Written).cookieValue];
  }

  async function preferencesWith(cookieValue: string) {
    const now: SessionRecord | undefined = await core.backends.open(cookieValue);
    return now?.data.preferences;
  }

  it('leaves the live seal unmarked: the mover’s change and a tab’s next save are taken', async () => {
    const cookies = await refusedAfterReturn((r) => core.backends.migrate(r.changed, 'database', 'flag', r.concurrency));
    for (const cookie of cookies) expect(await preferencesWith(cookie), `read with ${cookie.slice(0, 2)}…`).to.deep.equal({ r: 1, t: 1, v: 1 });
  });

  it('leaves the live seal unmarked when the mover is a read: it and a tab’s next save are answered', async () => {
    // A GET's move, changing nothing: it was answered 409 as well.
    const cookies = await refusedAfterReturn((r) => core.backends.migrate({ ...r.changed, data: { ...r.changed.data, preferences: { r: 0, t: 0, v: 0 } }, version: r.concurrency.readVersion }, 'database'));
    for (const cookie of cookies) expect(await preferencesWith(cookie), `read with ${cookie.slice(0, 2)}…`).to.deep.equal({ r: 0, t: 1, v: 1 });
  });
});
