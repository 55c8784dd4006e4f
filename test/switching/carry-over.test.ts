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
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { openCore, type Core } from '../../src/core.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { makeRecord } from '../sessions/fixtures.js';

describe('a move out of the cookie carrying over a newer seal', function () {
  this.timeout(60_000);
  let dir: string;
  let core: Core;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'switchboard-carry-over-'));
    // Database copies written behind late: the directory entry still holds the version the old cookie seals.
    const env = { DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'none', SESSION_SECRETS: randomBytes(32).toString('base64url'), MIRROR_FLUSH_MS: '10000' };
    core = await openCore(loadConfig({ ...env, SESSION_STORAGE: 'cookie' }), pino({ level: 'silent' }));
  });
  after(async () => {
    await core?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** `read` with preferences.counter set to `counter`, as PATCH /api/session changes it. */
  function patched(read: SessionRecord, counter: number) {
    const patch = { counter };
    const changed: SessionRecord = { ...read, data: { ...read.data, preferences: { ...(read.data.preferences as object), ...patch } }, version: read.version + 1, lastActivity: Date.now() };
    return { changed, concurrency: { readVersion: read.version, changedKeys: new Set(['preferences']), patches: new Map([['preferences', patch]]) } };
  }

  it('does not write the carried-over value over a later change of the same preference', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0, theme: 'dark' } } }, 'cookie'), 'cookie');
    // A GET reads the session with the browser's cookie of that moment…
    const oldRead = (await core.backends.open(created.cookieValue))!;
    // …while the writer's PATCH (counter 1) is sealed into the cookie.
    const one = patched(oldRead, 1);
    const sealed = (await core.backends.update(one.changed, 'save', one.concurrency))!;
    expect(sealed.record.backend).to.equal('cookie');

    // The flag says database now. The GET moves the session there; its eviction from the cookie
    // finds the newer seal (counter 1) to carry over. Just then the next PATCH, sent with the
    // newer cookie, moves the session to the database itself with counter 2 (answered 200).
    const stores = core.backends.stores;
    const evict = stores.cookie.evict.bind(stores.cookie);
    let later: Awaited<ReturnType<typeof core.backends.migrate>>;
    let first = true;
    stores.cookie.evict = async (r) => {
      if (!first) return evict(r);
      first = false;
      try {
        return await evict(r);
      } finally {
        const read = (await core.backends.open(sealed.cookieValue))!;
        expect(read.data.preferences).to.deep.include({ counter: 1 });
        const two = patched(read, 2);
        later = await core.backends.migrate(two.changed, 'database', 'flag', two.concurrency);
      }
    };
    let moved: Awaited<ReturnType<typeof core.backends.migrate>>;
    try {
      moved = await core.backends.migrate(oldRead, 'database');
    } finally {
      stores.cookie.evict = evict;
    }
    expect(later?.record.backend).to.equal('database');
    expect(later!.record.data.preferences).to.deep.include({ counter: 2 });
    expect(moved?.record.backend).to.equal('database');
    const now = (await core.backends.open(core.backends.cookieValue('database', created.record.id)))!;
    expect(now.data.preferences, 'counter 2 was answered last').to.deep.equal({ counter: 2, theme: 'dark' });
  });

  it('still carries over a newer seal whose change nobody has overwritten since', async () => {
    const created = await core.backends.create(makeRecord({ data: { ...makeRecord().data, preferences: { counter: 0 } } }, 'cookie'), 'cookie');
    const oldRead = (await core.backends.open(created.cookieValue))!;
    const one = patched(oldRead, 1);
    const sealed = (await core.backends.update(one.changed, 'save', one.concurrency))!;
    // The moved copy changes before the carry-over lands, in another preference.
    const stores = core.backends.stores;
    const evict = stores.cookie.evict.bind(stores.cookie);
    let first = true;
    stores.cookie.evict = async (r) => {
      if (!first) return evict(r);
      first = false;
      try {
        return await evict(r);
      } finally {
        const moved = (await core.backends.open(core.backends.cookieValue('database', created.record.id)))!;
        const patch = { theme: 'light' };
        const changed: SessionRecord = { ...moved, data: { ...moved.data, preferences: { ...(moved.data.preferences as object), ...patch } }, version: moved.version + 1 };
        await core.backends.update(changed, 'save', { readVersion: moved.version, changedKeys: new Set(['preferences']), patches: new Map([['preferences', patch]]) });
      }
    };
    try {
      await core.backends.migrate(oldRead, 'database');
    } finally {
      stores.cookie.evict = evict;
    }
    void sealed;
    const now = (await core.backends.open(core.backends.cookieValue('database', created.record.id)))!;
    expect(now.data.preferences).to.deep.equal({ counter: 1, theme: 'light' });
  });
});
