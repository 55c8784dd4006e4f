/**
 * PostgreSQL with a lock an operator holds in psql (a `SELECT … FOR UPDATE` left open, a
 * `LOCK TABLE`), database backend. Before, every statement that met the lock went on waiting on
 * its pooled connection after its request had had its 503, and the override's poll started a new
 * read every second behind a locked `flag_overrides`: within seconds all 10 connections waited,
 * and every user got 503. A statement now waits at most `lock_timeout` (2 s), and the poll runs
 * one at a time: only what needs the locked thing fails.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { connectPostgres, createTestDatabase, ensureServices, type PgClient, type TestDatabase } from '../support/postgres.js';

const TABS = 3;
const SAVES_PER_TAB = 5;
const OTHERS = 4;

describe('PostgreSQL with a lock held in psql (database backend)', function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let app: AppProcess;
  let admin: PgClient;
  before(async () => {
    await ensureServices();
    db = await createTestDatabase('locks');
    app = await startApp({ SESSION_STORAGE: 'database', DATABASE_URL: db.url });
    admin = await connectPostgres(db.url);
    admin.on('error', () => undefined);
  });
  afterEach(async () => {
    await admin.query('ROLLBACK').catch(() => undefined);
  });
  after(async () => {
    await admin?.end().catch(() => undefined);
    await app?.stop();
    await db?.drop();
  });

  const signedUp = (n: number) =>
    Promise.all(
      Array.from({ length: n }, async () => {
        const user = new Client(app.url);
        await user.signup();
        return user;
      }),
    );

  /** Users that read and change their sessions, a round at a time; every answer's status. */
  async function othersWhile(others: Client[], busy: Promise<unknown>, roundsAfter: number): Promise<number[]> {
    const statuses: number[] = [];
    let settled = false;
    void busy.finally(() => (settled = true));
    for (let round = 0, after = 0; !settled || after < roundsAfter; round++) {
      if (settled) after++;
      const answers = await Promise.all(others.map((user) => (round % 2 ? user.get('/api/session') : user.patch('/api/session', { preferences: { round } }))));
      statuses.push(...answers.map((res) => res.status));
    }
    return statuses;
  }

  it('one user’s session row locked: only that user’s changes fail (503), everybody else is served, and nobody is logged out', async () => {
    const locked = new Client(app.url);
    const { user } = await locked.signup();
    const others = await signedUp(OTHERS);
    await admin.query('BEGIN');
    await admin.query('SELECT id_hash FROM sessions WHERE user_id = $1 FOR UPDATE', [user.id]);
    // The locked user's tabs go on saving, one save after another's answer: more saves in all
    // than the pool has connections.
    const lockedSaves = Promise.all(
      Array.from({ length: TABS }, async (_, tab) => {
        const statuses: number[] = [];
        for (let n = 0; n < SAVES_PER_TAB; n++) statuses.push((await locked.patch('/api/session', { preferences: { tab, n } })).status);
        return statuses;
      }),
    );
    const othersStatuses = await othersWhile(others, lockedSaves, 4);
    const lockedStatuses = (await lockedSaves).flat();
    await admin.query('ROLLBACK');

    expect(othersStatuses.filter((status) => status !== 200), 'other users’ answers that were not 200').to.deep.equal([]);
    expect(new Set(lockedStatuses), 'the locked user’s saves').to.deep.equal(new Set([503]));
    const after = await locked.patch('/api/session', { preferences: { after: true } });
    expect(after.status, 'the locked user, once the lock is gone').to.equal(200);
    for (const other of others) expect((await other.get('/api/session')).status).to.equal(200);
  });

  it('the flag override’s table locked: sessions are served throughout', async () => {
    const users = await signedUp(OTHERS);
    await admin.query('BEGIN');
    await admin.query('LOCK TABLE flag_overrides IN ACCESS EXCLUSIVE MODE');
    // Long enough for a poll a second to have filled the pool many times over (10 connections).
    const held = new Promise((resolve) => setTimeout(resolve, 15_000));
    const statuses = await othersWhile(users, held, 2);
    await admin.query('ROLLBACK');
    expect(statuses.length).to.be.above(0);
    expect(statuses.filter((status) => status !== 200), 'answers that were not 200').to.deep.equal([]);
  });
});
