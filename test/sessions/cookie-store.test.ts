import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { CookieStore, MAX_SEALED_LENGTH } from '../../src/sessions/cookie-store.js';
import { SessionTooLargeError } from '../../src/sessions/errors.js';
import { RevocationList } from '../../src/sessions/revocations.js';
import { ABSOLUTE_MS, makeRecord, sqliteDb, type TestDb } from './fixtures.js';

const secret = () => randomBytes(32).toString('base64url');

describe('CookieStore', () => {
  let db: TestDb;
  let revocations: RevocationList;
  before(async () => {
    db = await sqliteDb();
    revocations = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 1000 });
    await revocations.start();
  });
  after(async () => {
    revocations.stop();
    await db.close();
  });

  it('refuses a session too large for a cookie with a clear error instead of truncating it', async () => {
    const store = new CookieStore([secret()], revocations);
    const record = makeRecord({}, 'cookie');
    record.data.notes = randomBytes(4000).toString('hex');
    const err = await store.create(record).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(SessionTooLargeError);
    expect((err as SessionTooLargeError).limit).to.equal(MAX_SEALED_LENGTH);
  });

  it('does not reveal the session data in the cookie', async () => {
    const store = new CookieStore([secret()], revocations);
    const record = makeRecord({}, 'cookie');
    const token = await store.create(record);
    expect(token).to.not.include(record.data.user.email);
    expect(Buffer.from(token.split('.')[2] ?? '', 'base64url').toString('latin1')).to.not.include(record.data.user.email);
  });

  describe('with several secrets (key rotation)', () => {
    it('opens cookies sealed with a retired secret, and seals new ones with the first', async () => {
      const [oldKey, newKey] = [secret(), secret()];
      const before = new CookieStore([oldKey], revocations);
      const record = makeRecord({}, 'cookie');
      const oldToken = await before.create(record);

      const rotated = new CookieStore([newKey, oldKey], revocations);
      expect((await rotated.load(oldToken))?.handle).to.equal(record.handle);
      const newToken = await rotated.save(record);

      const onlyNew = new CookieStore([newKey], revocations);
      expect((await onlyNew.load(newToken!))?.handle).to.equal(record.handle, 'the re-sealed cookie uses the first secret');
      expect(await onlyNew.load(oldToken)).to.equal(undefined, 'once the old secret is dropped, old cookies stop working');
    });
  });

  it('refuses a logged-out cookie on another instance once it has synced', async () => {
    const s = secret();
    const here = new CookieStore([s], revocations);
    const otherList = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 60_000 });
    await otherList.start();
    try {
      const there = new CookieStore([s], otherList);
      const record = makeRecord({}, 'cookie');
      const token = await here.create(record);
      expect(await there.load(token)).to.not.equal(undefined);
      await here.destroy(record);
      await otherList.sync();
      expect(await there.load(token)).to.equal(undefined);
    } finally {
      otherList.stop();
    }
  });
});
