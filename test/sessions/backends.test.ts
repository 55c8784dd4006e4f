/**
 * SessionBackends.open when the backend a cookie names cannot serve: a Redis session is served
 * from its database copy; a sealed cookie, whose copy the token cannot find, fails (503) rather
 * than reading as "no session" (401, which sends the user to log in).
 */
import { expect } from 'chai';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { DisabledStore } from '../../src/sessions/disabled-store.js';
import { BackendUnavailableError } from '../../src/sessions/errors.js';
import { GuardedStore } from '../../src/sessions/guarded-store.js';
import { SessionBackends } from '../../src/sessions/backends.js';
import { RevocationList } from '../../src/sessions/revocations.js';
import { SessionCookieValue } from '../../src/sessions/session-cookie-value.js';
import { ABSOLUTE_MS, makeRecord, sqliteDb, type TestDb } from './fixtures.js';

const SECRETS = ['a test secret of thirty-two characters'];

describe('SessionBackends.open with the named backend down', () => {
  let db: TestDb;
  let revocations: RevocationList;
  let backends: SessionBackends;
  const fallbacks: string[] = [];

  /** The database behind its guard, Redis and the cookie switched off; unsigned ids open for sessions issued before `unsignedBefore`. */
  function databaseOnly(unsignedBefore: number): SessionBackends {
    const database = new DatabaseStore(db.models);
    const observer = { operation() {}, availability() {} };
    return new SessionBackends(
      {
        database: new GuardedStore(database, { timeoutMs: 2000, breakerThreshold: 5, halfOpenAfterMs: 1000 }, observer),
        redis: new DisabledStore('redis'),
        cookie: new DisabledStore('cookie'),
      },
      database,
      revocations,
      'database',
      {
        fallback: (from, to, reason) => fallbacks.push(`${from}→${to} (${reason})`),
        migrated() {},
        secondaryFailure(err) {
          throw err;
        },
      },
      new SessionCookieValue(SECRETS, unsignedBefore),
    );
  }

  before(async () => {
    db = await sqliteDb();
    revocations = new RevocationList(db.models, { absoluteTimeoutMs: ABSOLUTE_MS, syncIntervalMs: 1000 });
    await revocations.start();
    backends = databaseOnly(0);
  });
  after(async () => {
    revocations.stop();
    await db.close();
  });

  it('serves a Redis session from its database copy, and counts the fallback', async () => {
    const record = makeRecord({}, 'redis');
    await backends.directory.create(record);
    const opened = await backends.open(backends.cookieValue('redis', record.id));
    expect(opened).to.deep.include({ handle: record.handle, backend: 'database' });
    expect(fallbacks).to.deep.equal(['redis→database (error)']);
  });

  it('opens the unsigned cookie of an older release only for a session issued before the upgrade', async () => {
    const cutoff = Date.now();
    const before = makeRecord({ issuedAt: cutoff - 1 });
    const since = makeRecord({ issuedAt: cutoff });
    for (const r of [before, since]) await backends.directory.create(r);
    const upgrading = databaseOnly(cutoff);
    expect(await upgrading.open(`d.${before.id}`)).to.deep.include({ handle: before.handle });
    expect(await upgrading.open(`d.${since.id}`)).to.equal(undefined);
    expect(await backends.open(`d.${before.id}`), 'a deployment that never had them').to.equal(undefined);
    for (const r of [before, since]) expect(await upgrading.open(upgrading.cookieValue('database', r.id)), 'signed, both open').to.deep.include({ handle: r.handle });
  });

  it('fails a sealed cookie as unavailable rather than as no session', async () => {
    let error: unknown;
    await backends.open(backends.cookieValue('cookie', 'c2VhbGVkLWJsb2I')).catch((err: unknown) => (error = err));
    expect(error).to.be.instanceOf(BackendUnavailableError);
  });
});
