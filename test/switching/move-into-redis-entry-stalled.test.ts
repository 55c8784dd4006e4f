/**
 * A move into Redis whose directory entry write does not answer within the mirrored store's wait
 * (MirroredStore.moveIn: COPY_THROUGH_WAIT_MS; a loaded host, a slow PostgreSQL). The entry orders
 * moves between requests and instances; written to Redis without it, the move is unordered: it
 * wrote over another request's move of the session into Redis, or beside a save made where the
 * session was, each answered 200, and the entry, landing late, was refused. Whichever cookie the
 * browser kept, one side's change was gone.
 */
import { expect } from 'chai';
import type { Core } from '../../src/core.js';
import type { Written } from '../../src/sessions/backends.js';
import type { GuardedStore } from '../../src/sessions/guarded-store.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';
import { patched } from './lagging-cookie-core.js';
import { redisCopyLeft } from './redis-copy-left.js';
import { redisMoveCore, stallNextDirectoryCall } from './redis-move-core.js';

describe('a move into Redis whose directory entry write misses its wait', function () {
  this.timeout(60_000);
  const opened = redisMoveCore('entry-stalled');
  let core: Core;
  before(() => {
    core = opened();
  });

  /** What SessionWriter does with a changed session and the flag saying `target`. */
  function written(changed: SessionRecord, concurrency: ReturnType<typeof patched>['concurrency'], target: 'cookie' | 'database' | 'redis') {
    return changed.backend === target ? core.backends.update(changed, 'save', concurrency) : core.backends.migrate(changed, target, 'flag', concurrency, Date.now());
  }

  /** The database stalls for the next write of a directory entry (`moveIn`: a move's first step) until released. */
  const stallNextEntryWrite = () => stallNextDirectoryCall(core, 'moveIn');

  /** Every cookie the browser may keep reads every change answered 200. */
  const { everyCookieReads } = redisCopyLeft(() => core);

  /** A session in the sealed cookie, `{w0: 0}`. */
  const cookieSession = () => core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'cookie'), 'cookie');

  /**
   * The move's next write of a directory entry (the fallback's) waits until the `stall`ed one has
   * landed. (`stall.restore` puts the directory's own `moveIn` back.)
   */
  function landsFirst(stall: ReturnType<typeof stallNextEntryWrite>) {
    const directory = core.backends.directory;
    const original = directory.moveIn;
    directory.moveIn = async (...args) => {
      directory.moveIn = original;
      stall.release();
      await stall.landed;
      return original.apply(directory, args);
    };
  }

  /** A session in the database; two requests (PATCHes) read it there. */
  async function readTwice() {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { w0: 0 } } }, 'database'), 'database');
    const first = (await core.backends.open(created.cookieValue))!;
    const second = (await core.backends.open(created.cookieValue))!;
    expect(first.backend).to.equal('database');
    return { created, first, second };
  }

  for (const told of ['database', 'redis'] as const) {
    it(`keeps a change another request made (told ${told}) while the move's entry write was stalled, refused when it lands`, async () => {
      const { created, first, second } = await readTwice();
      const stall = stallNextEntryWrite();
      try {
        // The first, told Redis, moves the session there; its entry write stalls.
        const one = patched(first, { a: 1 });
        const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
        await stall.reached;
        // The second (another instance's, or this one's past its wait for the move) writes its
        // change: where the session is, or moved into Redis itself, ordered by the entry.
        const two = patched(second, { b: 2 });
        const other = (await written(two.changed, two.concurrency, told)) as Written;
        expect(other.record.data.preferences).to.deep.include({ b: 2 });
        const moved = await moving;
        stall.release();
        await stall.landed;
        // Both answered 200: whichever cookie the browser keeps, it reads both changes.
        await everyCookieReads(
          [
            ['the move', moved?.cookieValue],
            ['the other request', other.cookieValue],
            ['the session as created', created.cookieValue],
          ],
          { w0: 0, a: 1, b: 2 },
        );
        // And a change made with either cookie goes onto both.
        const later = (await core.backends.open(moved?.cookieValue ?? other.cookieValue))!;
        const three = patched(later, { c: 3 });
        const third = (await written(three.changed, three.concurrency, 'redis'))!;
        await everyCookieReads(
          [
            ['the third request', third.cookieValue],
            ['the move', moved?.cookieValue],
            ['the other request', other.cookieValue],
          ],
          { w0: 0, a: 1, b: 2, c: 3 },
        );
      } finally {
        stall.restore();
      }
    });
  }

  it('keeps a change saved with a cookie naming the database after the move answered, before its entry landed', async () => {
    const { created, first } = await readTwice();
    const stall = stallNextEntryWrite();
    const fallbacksFromRedis = async () => (await core.metrics.fallbacks.get()).values.filter((v) => v.labels.from === 'redis').reduce((n, v) => n + v.value, 0);
    const fallbacksBefore = await fallbacksFromRedis();
    try {
      const one = patched(first, { a: 1 });
      const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
      await stall.reached;
      const moved = await moving;
      // The database was slow, not Redis: not counted as Redis failing (nor, so, by the rollback).
      expect(await fallbacksFromRedis(), 'session_store_fallbacks_total{from="redis"}').to.equal(fallbacksBefore);
      const untaken = (core.backends as unknown as { untaken: Map<string, unknown> }).untaken.has(first.idHash);
      // A tab's request sent with the cookie naming the database (before the move's answer), on
      // an instance still told database: served, and saved, where that cookie points.
      const tab = await core.backends.open(created.cookieValue);
      expect(tab, "the tab's read: a session, not logged out").to.not.equal(undefined);
      expect(tab!.data.preferences, "the tab's read").to.deep.equal({ w0: 0, a: 1 });
      const two = patched(tab!, { t: 2 });
      const saved = (await written(two.changed, two.concurrency, 'database'))!;
      stall.release();
      await stall.landed;
      await everyCookieReads(
        [
          ['the move', moved?.cookieValue],
          ["the tab's request", saved.cookieValue],
          ['the session as created', created.cookieValue],
        ],
        { w0: 0, a: 1, t: 2 },
      );
      // Not moved now (the database's fallback took it), and Redis was never sent it: nothing there to take at the next open.
      expect(moved?.record.backend).to.equal('database');
      expect(untaken, 'a take remembered').to.equal(false);
    } finally {
      stall.restore();
    }
  });

  it('is read as the move wrote it, whichever cookie, once the stalled entry write lands', async () => {
    const { created, first } = await readTwice();
    const stall = stallNextEntryWrite();
    try {
      const one = patched(first, { a: 1 });
      const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
      await stall.reached;
      const moved = await moving;
      stall.release();
      await stall.landed;
      // A tab's change with the move's cookie, then every cookie.
      const tab = (await core.backends.open(moved!.cookieValue))!;
      const two = patched(tab, { t: 2 });
      const saved = (await written(two.changed, two.concurrency, 'redis'))!;
      await everyCookieReads(
        [
          ['the move', moved?.cookieValue],
          ["the tab's request", saved.cookieValue],
          ['the session as created', created.cookieValue],
        ],
        { w0: 0, a: 1, t: 2 },
      );
    } finally {
      stall.restore();
    }
  });

  it('is read as the move wrote it when the stalled entry write lands just before what the move writes next', async () => {
    const { created, first } = await readTwice();
    const stall = stallNextEntryWrite();
    try {
      const one = patched(first, { a: 1 });
      const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
      await stall.reached;
      landsFirst(stall);
      const moved = await moving;
      stall.release();
      await stall.landed;
      expect(moved?.record.data.preferences, "the move's answer").to.deep.equal({ w0: 0, a: 1 });
      const tab = (await core.backends.open(created.cookieValue))!;
      const two = patched(tab, { t: 2 });
      const saved = (await written(two.changed, two.concurrency, 'redis'))!;
      await everyCookieReads(
        [
          ['the move', moved?.cookieValue],
          ["the tab's request", saved.cookieValue],
          ['the session as created', created.cookieValue],
          ['a cookie naming Redis', core.backends.cookieValue('redis', first.id)],
        ],
        { w0: 0, a: 1, t: 2 },
      );
    } finally {
      stall.restore();
    }
  });

  it("keeps a tab's seal made while a move out of the cookie had its entry write stalled", async () => {
    const created = await cookieSession();
    const first = (await core.backends.open(created.cookieValue))!;
    const second = (await core.backends.open(created.cookieValue))!;
    const stall = stallNextEntryWrite();
    try {
      const one = patched(first, { a: 1 });
      const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
      await stall.reached;
      // A tab, told cookie, seals its change; its copy is written behind meanwhile.
      const two = patched(second, { t: 2 });
      const sealed = (await written(two.changed, two.concurrency, 'cookie'))!;
      expect(sealed.record.backend).to.equal('cookie');
      await core.backends.stores.cookie.flush?.();
      const moved = await moving;
      stall.release();
      await stall.landed;
      await everyCookieReads(
        [
          ['the move', moved?.cookieValue],
          ["the tab's seal", sealed.cookieValue],
          ['a cookie naming the database', core.backends.cookieValue('database', first.id)],
          ['a cookie naming Redis', core.backends.cookieValue('redis', first.id)],
        ],
        { w0: 0, a: 1, t: 2 },
      );
    } finally {
      stall.restore();
    }
  });

  for (const told of ['cookie', 'redis'] as const) {
    it(`serves a tab's older seal (told ${told}) where a move out of the cookie went, its stalled entry write landed just before the fallback's`, async () => {
      const created = await cookieSession();
      const first = (await core.backends.open(created.cookieValue))!;
      const stall = stallNextEntryWrite();
      try {
        const one = patched(first, { a: 1 });
        const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
        await stall.reached;
        // Refused (the entry is past what the move read), the move goes on from the entry's copy.
        landsFirst(stall);
        const moved = (await moving)!;
        expect(moved.record.data.preferences, "the move's answer").to.deep.equal({ w0: 0, a: 1 });
        // A tab's request sent with the seal from before the move's answer.
        const tab = (await core.backends.open(created.cookieValue))!;
        expect(tab.data.preferences, "the tab's read with the older seal").to.deep.equal({ w0: 0, a: 1 });
        const two = patched(tab, { t: 2 });
        const saved = (await written(two.changed, two.concurrency, told))!;
        expect(saved, "the tab's save").to.not.equal(undefined);
        await core.backends.stores.cookie.flush?.();
        await everyCookieReads(
          [
            ['the move', moved.cookieValue],
            ["the tab's request", saved.cookieValue],
            ['the session as created', created.cookieValue],
          ],
          { w0: 0, a: 1, t: 2 },
        );
      } finally {
        stall.restore();
      }
    });
  }

  it("keeps a tab's seal made while a move out of the cookie had its entry write stalled, its copy landing after the entry, the fallback's write refused", async () => {
    const created = await cookieSession();
    const first = (await core.backends.open(created.cookieValue))!;
    const second = (await core.backends.open(created.cookieValue))!;
    const stall = stallNextEntryWrite();
    let copy: ReturnType<typeof stallNextDirectoryCall> | undefined;
    try {
      const one = patched(first, { a: 1 });
      const moving = core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
      await stall.reached;
      // A tab, told cookie, seals its change; its copy, written behind, is held until the entry has landed.
      copy = stallNextDirectoryCall(core, 'upsertMany');
      const two = patched(second, { t: 2 });
      const sealed = (await written(two.changed, two.concurrency, 'cookie'))!;
      expect(sealed.record.backend).to.equal('cookie');
      await copy.reached;
      landsFirst(stall);
      const moved = (await moving)!;
      copy.release();
      await copy.landed;
      await everyCookieReads(
        [
          ['the move', moved.cookieValue],
          ["the tab's seal", sealed.cookieValue],
          ['the session as created', created.cookieValue],
        ],
        { w0: 0, a: 1, t: 2 },
      );
    } finally {
      copy?.restore();
      stall.restore();
    }
  });

  it("goes on unordered while the database's breaker is open, as when the database is down", async () => {
    const created = await cookieSession();
    const read = (await core.backends.open(created.cookieValue))!;
    const guard = core.backends.stores.database as unknown as GuardedStore;
    const isolated = (guard as unknown as { breaker: { isolate(): { dispose(): void } } }).breaker.isolate();
    const stall = stallNextEntryWrite();
    let moved: Written | undefined;
    try {
      const one = patched(read, { a: 1 });
      moved = await core.backends.migrate(one.changed, 'redis', 'flag', one.concurrency, Date.now());
    } finally {
      isolated.dispose();
      stall.release();
      await stall.landed;
      stall.restore();
    }
    // Not answered 503 (the fallback's write, through the open breaker, would be): moved, as before.
    expect(moved?.record.backend).to.equal('redis');
    await everyCookieReads([['the move', moved?.cookieValue]], { w0: 0, a: 1 });
  });
});
