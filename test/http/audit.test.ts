/**
 * Every session action leaves an audit row (session_events) saying who acted, whose sessions,
 * how many, from where and when — and never a session id or a password.
 */
import { expect } from 'chai';
import path from 'node:path';
import { QueryTypes } from 'sequelize';
import { openDatabase } from '../../src/db/database.js';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { connectPostgres, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitUntil } from '../support/redis-server.js';

const TOKEN = 'audit-test-admin-token-123';

describe('the session audit trail', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ ADMIN_TOKEN: TOKEN, LOG_LEVEL: 'info' });
  });
  after(() => app?.stop());

  it('records logins, logouts, revocations, password changes and admin actions', async () => {
    const admin = { Authorization: `Bearer ${TOKEN}` };
    const ann = new Client(app.url, 'AuditAgent/1.0');
    const { user, email, password } = await ann.signup();
    const cookie = ann.sessionCookie()!;
    const other = new Client(app.url);
    await other.login(email, password);
    // Logging in again in the same browser ends the session it had: not a rotation.
    const replaced = (await other.get('/api/session')).body as { session: { handle: string } };
    await other.login(email, password);
    await ann.post('/api/sessions/revoke-others');
    await ann.post('/api/password', { currentPassword: password, newPassword: 'a brand new passphrase' });
    await new Client(app.url).delete(`/api/admin/users/${user.id}/sessions`, admin);
    await new Client(app.url).patch(`/api/admin/users/${user.id}`, { active: false }, admin);
    await new Client(app.url).post('/api/admin/sessions/revoke-all', {}, admin);

    const db = await openDatabase(`sqlite:${path.join(app.dataDir, 'switchboard.sqlite')}`);
    try {
      let rows: Array<Record<string, unknown>> = [];
      // The revoke-all's row is written once its count is known, after it has answered: the last to come.
      for (let i = 0; i < 200 && !rows.some((r) => r.type === 'revoke_all'); i++) {
        rows = await db.query('SELECT * FROM session_events ORDER BY id', { type: QueryTypes.SELECT });
        await new Promise((r) => setTimeout(r, 50));
      }
      const summary = rows.map((r) => `${r.type}/${r.reason ?? ''}/${r.actor}`);
      expect(summary).to.include.members([
        'created//user:' + user.id,
        'revoked/others/user:' + user.id,
        'revoked/password_change/user:' + user.id,
        'rotated//user:' + user.id,
        'revoked/admin/admin',
        'disabled/disabled/admin',
        'revoke_all/revoke_all/admin',
      ]);
      expect(rows.filter((r) => r.handle === replaced.session.handle).map((r) => `${r.type}/${r.reason}`)).to.deep.equal(['created/null', 'destroyed/replaced_by_login']);
      const mine = rows.find((r) => r.type === 'revoked' && r.reason === 'others');
      expect(mine).to.include({ user_id: user.id, ip: '127.0.0.1', user_agent: 'AuditAgent/1.0', count: 1 });
      expect(mine?.created_at).to.be.a('string');
      const text = JSON.stringify(rows);
      expect(text, 'the session id (the token after the prefix)').to.not.include(cookie.slice(2, 45));
      expect(text).to.not.include(password);
    } finally {
      await db.close();
    }
  });

  it('logs every refused login, admin token and CSRF token: address, route and account, never what was typed', async () => {
    const ann = new Client(app.url);
    const { user, email } = await ann.signup();
    const typed = 'Wrong-Password-Not-To-Log';
    const unknown = `nobody-${Date.now()}@example.com`;
    expect((await new Client(app.url).login(email, typed)).status).to.equal(401);
    expect((await new Client(app.url).login(unknown, typed)).status).to.equal(401);
    expect((await new Client(app.url).get('/api/admin/flags', { Authorization: 'Bearer not-the-token' })).status).to.equal(401);
    ann.csrfToken = 'not-the-csrf-token';
    expect((await ann.post('/api/sessions/revoke-others')).status).to.equal(403);
    const refusedLines = () => app.output().split('\n').filter((line) => line.includes('"event":"refused"'));
    // The log is the child's stdout: its lines arrive a moment after the answers.
    await waitUntil('the refusals logged', () => refusedLines().some((line) => line.includes('csrf_failed')), 100);
    const refused = refusedLines().map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(refused.map((r) => [r.code, r.method, r.path])).to.deep.include.members([
      ['invalid_credentials', 'POST', '/api/login'],
      ['unauthorized', 'GET', '/api/admin/flags'],
      ['csrf_failed', 'POST', '/api/sessions/revoke-others'],
    ]);
    expect(refused.filter((r) => r.code === 'invalid_credentials').map((r) => r.userId), 'the account tried, when it exists').to.include.members([user.id, undefined]);
    for (const r of refused) expect(r.ip).to.equal('127.0.0.1');
    for (const secret of [typed, unknown, email, 'not-the-token', 'not-the-csrf-token']) expect(app.output()).to.not.include(secret);
  });
});

describe('the session audit trail on PostgreSQL, behind a proxy', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let app: AppProcess;
  before(async () => {
    db = await createTestDatabase('switchboard_audit');
    app = await startApp({ DATABASE_URL: db.url, TRUST_PROXY: 'true' });
  });
  after(async () => {
    await app?.stop();
    await db?.drop();
  });

  it('keeps the row of a signup from an address longer than its column, cut as the sessions table cuts it', async () => {
    // Behind TRUST_PROXY the address is what X-Forwarded-For says; PostgreSQL refused a row
    // with more than 64 characters there, and the signup went unaudited.
    const forwarded = 'x'.repeat(100);
    const email = `audit-${Date.now()}@example.com`;
    const res = await new Client(app.url).post('/api/signup', { email, password: 'correct horse battery staple', name: 'Far Away' }, { 'X-Forwarded-For': forwarded });
    expect(res.status, res.text).to.equal(201);
    const userId = (res.json.user as { id: number }).id;
    const pg = await connectPostgres(db.url);
    try {
      let rows: Array<{ ip: string }> = [];
      for (let i = 0; i < 60 && rows.length === 0; i++) {
        rows = (await pg.query("SELECT ip FROM session_events WHERE user_id = $1 AND type = 'created'", [userId])).rows as Array<{ ip: string }>;
        if (rows.length === 0) await new Promise((r) => setTimeout(r, 50));
      }
      expect(rows.map((r) => r.ip)).to.deep.equal([forwarded.slice(0, 64)]);
    } finally {
      await pg.end();
    }
    expect(app.output()).to.not.include('could not write session event');
  });
});

describe('the address of an IPv4 client on a dual-stack socket (HOST=::)', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ HOST: '::' });
  });
  after(() => app?.stop());

  it('is a.b.c.d in the session listing and in the audit row alike, not ::ffff:a.b.c.d', async () => {
    const ann = new Client(app.url);
    const { user } = await ann.signup();
    const listed = (await ann.get('/api/sessions')).json.sessions as Array<{ ip: string }>;
    expect(listed.map((s) => s.ip)).to.deep.equal(['127.0.0.1']);
    const db = await openDatabase(`sqlite:${path.join(app.dataDir, 'switchboard.sqlite')}`);
    try {
      let rows: Array<{ ip: string }> = [];
      for (let i = 0; i < 60 && rows.length === 0; i++) {
        rows = await db.query("SELECT ip FROM session_events WHERE user_id = ? AND type = 'created'", { replacements: [user.id], type: QueryTypes.SELECT });
        if (rows.length === 0) await new Promise((r) => setTimeout(r, 50));
      }
      expect(rows.map((r) => r.ip)).to.deep.equal(['127.0.0.1']);
    } finally {
      await db.close();
    }
  });
});
