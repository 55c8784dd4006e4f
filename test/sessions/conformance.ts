/**
 * The one conformance suite every SessionStore passes, run unchanged against each backend and
 * each composition on the real services (stores.test.ts). A store that cannot do something
 * declares it as a capability, and the case says why it is skipped.
 */
import { expect } from 'chai';
import { SessionConflictError } from '../../src/sessions/errors.js';
import type { SessionRecord } from '../../src/sessions/session.js';
import { isIndexed, type SessionStore } from '../../src/sessions/store.js';
import { makeRecord, newUserId } from './fixtures.js';

export interface StoreUnderTest {
  store: SessionStore;
  /** Every byte the store keeps server-side, as text — to check that no secret id or (when encrypted) no data is in it. */
  dumpAtRest?: () => Promise<string>;
  close(): Promise<void>;
  /** Writes what the store writes behind (a mirrored store's database copy). */
  settle?: () => Promise<void>;
}

export interface Capabilities {
  /** Server-side stores keep the token (the id) across saves; a sealed cookie is re-sealed. */
  stableToken: boolean;
  /** A cookie alone cannot be found from the server; with a database copy it can. */
  listable: boolean;
  /** The session data is encrypted where it rests. */
  encryptedAtRest?: boolean;
  /**
   * Keeps the IP and User-Agent the session was created from (default true). The app's Redis and
   * cookie formats leave them to the database directory, which lists sessions: they are needed
   * for listing, not for serving, and would double the bytes per session.
   */
  clientInfo?: boolean;
  /**
   * A move finds out that the session changed since it was read (the database: the session's
   * directory entry, also behind the mirrored compositions; Redis: a copy newer than the mover
   * read). A sealed cookie has nothing to compare against.
   */
  ordersMoves?: boolean;
  /** Keeps a database copy that an eviction leaves for the destination to take over. */
  mirrored?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeStoreConformance(name: string, setup: () => Promise<StoreUnderTest>, can: Capabilities) {
  describe(`${name} (SessionStore conformance)`, function () {
    this.timeout(30_000);
    let t: StoreUnderTest;
    let store: SessionStore;
    const fresh = (o: Partial<SessionRecord> = {}) => makeRecord(o, store.backend);

    before(async () => {
      t = await setup();
      store = t.store;
    });
    after(() => t?.close());

    describe('a created session', () => {
      it('loads back with the same user, handle, data and times', async () => {
        const record = fresh({ data: { ...makeRecord().data, platformId: 7, nested: { a: [1, 2, 'ß'] } } });
        const token = await store.create(record);
        const loaded = await store.load(token);
        expect(loaded).to.not.equal(undefined);
        const { id: _id, ip, userAgent, ...expected } = record;
        expect(loaded).to.deep.include({ ...expected, backend: store.backend });
        if (can.clientInfo !== false) expect(loaded).to.deep.include({ ip, userAgent });
      });

      it('is a miss for an unknown, empty or garbled token', async () => {
        expect(await store.load('x'.repeat(43))).to.equal(undefined);
        expect(await store.load('')).to.equal(undefined);
        expect(await store.load('%%%...\u0000')).to.equal(undefined);
      });

      it('is a miss once its token has been altered', async () => {
        const token = await store.create(fresh());
        const i = Math.floor(token.length / 2);
        const altered = token.slice(0, i) + (token[i] === 'A' ? 'B' : 'A') + token.slice(i + 1);
        expect(await store.load(altered)).to.equal(undefined);
        for (const padded of [token + 'A', 'A' + token, token.slice(0, i) + 'A' + token.slice(i)]) {
          expect(await store.load(padded), 'a character added').to.equal(undefined);
        }
      });
    });

    describe('saving', () => {
      it('replaces the data and keeps the session', async () => {
        const record = fresh();
        const token = await store.create(record);
        const changed = { ...record, data: { ...record.data, platformId: 42 }, version: 2 };
        const newToken = await store.save(changed);
        expect(newToken).to.be.a('string');
        const loaded = await store.load(newToken!);
        expect(loaded?.data.platformId).to.equal(42);
        expect(loaded?.version).to.equal(2);
        if (can.stableToken) expect(newToken).to.equal(token);
      });

      it('refuses to overwrite a newer version than the one the caller read', async function () {
        if (!can.stableToken) this.skip(); // a sealed cookie has no server-side version to compare with
        const record = fresh();
        await store.create(record);
        await store.save({ ...record, version: 2, data: { ...record.data, platformId: 1 } }, 1);
        const stale = await store.save({ ...record, version: 2, data: { ...record.data, platformId: 2 } }, 1).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(stale).to.be.instanceOf(SessionConflictError);
      });

      it('does not bring back a session that was destroyed meanwhile', async () => {
        const record = fresh();
        const token = await store.create(record);
        await store.destroy(record);
        expect(await store.save({ ...record, data: { ...record.data, platformId: 1 } })).to.equal(undefined);
        expect(await store.load(token)).to.equal(undefined);
      });
    });

    describe('touching', () => {
      it('extends the idle expiry without changing the data', async () => {
        const record = fresh();
        await store.create(record);
        const later = { ...record, lastActivity: record.lastActivity + 5000, expiresAt: record.expiresAt + 5000 };
        const token = await store.touch(later);
        const loaded = await store.load(token!);
        expect(loaded?.lastActivity).to.equal(later.lastActivity);
        expect(loaded?.expiresAt).to.equal(later.expiresAt);
        expect(loaded?.data).to.deep.equal(record.data);
      });

      it('does not bring back a destroyed session', async () => {
        const record = fresh();
        const token = await store.create(record);
        await store.destroy(record);
        expect(await store.touch({ ...record, lastActivity: Date.now() })).to.equal(undefined);
        expect(await store.load(token)).to.equal(undefined);
      });
    });

    describe('destroying', () => {
      it('makes the old token useless, and is idempotent', async () => {
        const record = fresh();
        const token = await store.create(record);
        await store.destroy(record);
        await store.destroy(record);
        expect(await store.load(token)).to.equal(undefined);
      });
    });

    describe('moving in and out', () => {
      it('takes a session moving in at its next version', async () => {
        const record = fresh({ version: 4 });
        const token = await store.moveIn(record, 3);
        expect(token).to.be.a('string');
        expect(await store.load(token!)).to.deep.include({ version: 4, userId: record.userId });
      });

      it('refuses a move of a session that changed here since the mover read it', async function () {
        if (!can.ordersMoves) this.skip();
        const record = fresh({ version: 1 });
        await store.create(record);
        const saved = await store.save({ ...record, version: 2, data: { ...record.data, platformId: 5 } }, 1);
        await t.settle?.();
        expect(await store.moveIn({ ...record, version: 2, data: { ...record.data, platformId: 6 } }, 1), 'read at version 1, moved in over 2').to.equal(undefined);
        expect((await store.load(saved!))?.data.platformId, 'the save stays').to.equal(5);
      });

      it('evicts only the copy that was moved: one saved since stays', async function () {
        if (!can.stableToken) this.skip(); // a sealed cookie is in the browser: nothing to evict
        const record = fresh({ version: 1 });
        const token = await store.create(record);
        await store.save({ ...record, version: 2 }, 1);
        await store.evict(record);
        expect(await store.load(token), 'saved after it was read').to.deep.include({ version: 2 });
        await store.evict({ ...record, version: 2 });
        if (!can.mirrored) expect(await store.load(token)).to.equal(undefined);
      });
    });

    describe('expiry', () => {
      it('is a miss once expiresAt has passed', async () => {
        const now = Date.now();
        const record = fresh({ lastActivity: now, expiresAt: now + 300 });
        const token = await store.create(record);
        expect(await store.load(token)).to.not.equal(undefined);
        for (let i = 0; i < 50 && Date.now() <= record.expiresAt; i++) await sleep(50);
        await sleep(20);
        expect(await store.load(token)).to.equal(undefined);
      });
    });

    describe('listing by user', function () {
      before(function () {
        if (!can.listable) this.skip(); // a cookie cannot be found from the server; the database copy lists them (mirrored-store)
      });

      it("lists the user's live sessions, oldest first, and nobody else's", async () => {
        if (!isIndexed(store)) throw new Error('store says it is listable but has no listByUser');
        const userId = newUserId();
        const now = Date.now();
        const a = fresh({ userId, createdAt: now - 2000 });
        const b = fresh({ userId, createdAt: now - 1000 });
        const gone = fresh({ userId });
        const other = fresh();
        for (const r of [b, a, gone, other]) await store.create(r);
        await store.destroy(gone);
        const listed = await store.listByUser(userId);
        expect(listed.map((r) => r.handle)).to.deep.equal([a.handle, b.handle]);
        expect(listed.every((r) => r.id === '')).to.equal(true, 'a listing never carries the secret id');
      });

      it('revokes one session by handle, and all but one', async () => {
        if (!isIndexed(store)) throw new Error('not listable');
        const userId = newUserId();
        const records = [fresh({ userId }), fresh({ userId }), fresh({ userId })];
        const tokens = await Promise.all(records.map((r) => store.create(r)));
        const [first, second, third] = records as [SessionRecord, SessionRecord, SessionRecord];
        const target = (await store.listByUser(userId)).find((r) => r.handle === second.handle);
        await store.destroy(target!);
        expect(await store.load(tokens[1]!)).to.equal(undefined);
        expect(await store.load(tokens[0]!)).to.not.equal(undefined);
        for (const r of await store.listByUser(userId)) if (r.handle !== third.handle) await store.destroy(r);
        expect((await store.listByUser(userId)).map((r) => r.handle)).to.deep.equal([third.handle]);
        expect(await store.load(tokens[0]!)).to.equal(undefined);
        expect(first.handle).to.be.a('string');
      });

      it('leaves expired sessions out', async () => {
        if (!isIndexed(store)) throw new Error('not listable');
        const userId = newUserId();
        const now = Date.now();
        await store.create(fresh({ userId, lastActivity: now, expiresAt: now + 200 }));
        const alive = fresh({ userId });
        await store.create(alive);
        for (let i = 0; i < 50 && Date.now() <= now + 200; i++) await sleep(50);
        await sleep(20);
        expect((await store.listByUser(userId)).map((r) => r.handle)).to.deep.equal([alive.handle]);
      });
    });

    describe('what rests on the server', function () {
      before(function () {
        if (!t.dumpAtRest) this.skip(); // the bare cookie store keeps nothing per session server-side
      });

      it('never holds the session id itself, only its hash', async () => {
        const record = fresh();
        await store.create(record);
        const dump = await t.dumpAtRest!();
        expect(dump).to.include(record.handle);
        expect(dump).to.not.include(record.id);
      });

      it('holds the data encrypted when encryption at rest is on', async function () {
        if (!can.encryptedAtRest) this.skip();
        const record = fresh();
        record.data.secretNote = 'plaintext-marker-Q7';
        await store.create(record);
        expect(await t.dumpAtRest!()).to.not.include('plaintext-marker-Q7');
      });
    });
  });
}
