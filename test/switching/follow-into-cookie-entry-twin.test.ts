/**
 * A move into the cookie by a tab whose cookie names the database writes the directory entry one
 * version on from the entry it read — which lags the seals (copies are written behind) — and then
 * seals. Meanwhile another tab has sealed that very version with its own change (its copy still
 * waiting): until the move seals, the entry and the latest seal are two states of one version,
 * the entry's without that change. A save that follows the session from that entry into the
 * cookie (one read in the database before the flip), or a move refused by that entry (it saves a
 * version past the entry: refused-move-seals-entry-version), was checked against seals strictly
 * newer than the entry: the other tab's seal, of the entry's own version, passed, and it sealed
 * the entry's data a version past it — the other tab's change, answered 200, was gone, and the
 * move then merged onto that seal.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { holdNextSeal, laggingCookieCore, patched } from './lagging-cookie-core.js';

describe('a save into the cookie from a directory entry of the version another tab has sealed', function () {
  this.timeout(60_000);
  const lagging = laggingCookieCore();
  let core: Core;
  before(() => {
    core = lagging();
  });

  /**
   * A session moved from the database into the cookie (version 2); `early` read it in the database
   * before that. Then T, with the seal, saves t (version 3, its copy waiting); M, with a cookie
   * naming the database, read the entry (version 2) before, and moves the session into the cookie
   * again: its entry (version 3, without t) is written, its seal held until `meanwhile` has run.
   */
  async function withEntryTwin(meanwhile: (early: ReturnType<typeof patched>, entryVersion: number) => Promise<unknown>) {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { e: 0, m: 0, t: 0 } } }, 'database'), 'database');
    const early = patched((await core.backends.open(created.cookieValue))!, { e: 1 });
    const moved = (await core.backends.migrate((await core.backends.open(created.cookieValue))!, 'cookie'))!;
    expect(moved.record).to.include({ backend: 'cookie', version: 2 });
    const t = patched((await core.backends.open(moved.cookieValue))!, { t: 1 });
    const m = patched((await core.backends.open(created.cookieValue))!, { m: 1 });
    expect(m.changed).to.deep.include({ backend: 'database', heldBy: 'cookie', version: 3 });
    const tSaved = (await core.backends.update(t.changed, 'save', t.concurrency))!;
    expect(tSaved.record).to.include({ backend: 'cookie', version: 3 });
    const seal = holdNextSeal(core);
    try {
      const mMove = core.backends.migrate(m.changed, 'cookie', 'flag', m.concurrency);
      await seal.reached;
      const entry = (await core.backends.stores.database.load(created.record.id))!;
      expect(entry, 'the move’s entry, without t').to.deep.include({ heldBy: 'cookie', version: 3 });
      expect(entry.data.preferences).to.include({ t: 0 });
      const written = await meanwhile(early, entry.version);
      seal.release();
      const mMoved = (await mMove)!;
      return { cookies: [tSaved.cookieValue, mMoved.cookieValue, (written as { cookieValue?: string } | undefined)?.cookieValue].filter((c): c is string => c !== undefined) };
    } finally {
      seal.restore();
    }
  }

  async function preferencesWith(cookieValue: string) {
    const now: SessionRecord | undefined = await core.backends.open(cookieValue);
    return now?.data.preferences;
  }

  it('keeps that tab’s change when a save read in the database follows the session from the entry', async () => {
    const { cookies } = await withEntryTwin((early) => core.backends.update(early.changed, 'save', early.concurrency));
    for (const cookie of cookies) expect(await preferencesWith(cookie), `read with ${cookie.slice(0, 2)}…`).to.deep.equal({ e: 1, m: 1, t: 1 });
  });

  it('keeps that tab’s change when a move into the cookie is refused by the entry', async () => {
    // A request that read the session in the database before the first move: it waits for the
    // move under way (M's, held here past MOVE_WAIT_MS, as a slow one is), then moves the session
    // itself, is refused by M's entry, and saves a version past it in the cookie.
    const { cookies } = await withEntryTwin((early) => core.backends.migrate(early.changed, 'cookie', 'flag', early.concurrency));
    for (const cookie of cookies) expect(await preferencesWith(cookie), `read with ${cookie.slice(0, 2)}…`).to.deep.equal({ e: 1, m: 1, t: 1 });
  });

  it('keeps that tab’s change when a read’s move into the cookie is refused by the entry', async () => {
    // As above, a request that changed nothing (a read): refused, it touches the session where the
    // entry says it is — sealed the entry's state at the entry's version, that seal replaced the
    // other tab's of that version as the latest, and the move then merged onto it.
    const { cookies } = await withEntryTwin((early) => core.backends.migrate({ ...early.changed, data: { ...early.changed.data, preferences: { e: 0, m: 0, t: 0 } }, version: early.concurrency.readVersion }, 'cookie'));
    for (const cookie of cookies) expect(await preferencesWith(cookie), `read with ${cookie.slice(0, 2)}…`).to.deep.equal({ e: 0, m: 1, t: 1 });
  });
});
