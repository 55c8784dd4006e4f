/**
 * CSRF (API.md, HTTP API): a state-changing request that carries a session cookie must carry
 * that session's token in X-CSRF-Token (or the `_csrf` form field), else 403 csrf_failed.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client, type Reply } from '../support/http-client.js';
import { expectError, GOOD_PASSWORD } from './helpers.js';

describe('CSRF protection of state-changing requests', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp();
  });
  after(() => app?.stop());

  /** A logged-in user with a second session (so there is a handle to revoke) and a platform. */
  async function loggedIn() {
    const browser = new Client(app.url);
    const { email } = await browser.signup();
    const other = new Client(app.url);
    await other.login(email, GOOD_PASSWORD);
    const otherHandle = ((await other.get('/api/session')).json.session as { handle: string }).handle;
    const platform = (await browser.post('/api/platforms', { name: 'Main', type: 'github' })).json.platform as { id: number };
    return { browser, other, otherHandle, platformId: platform.id, email };
  }

  type Attempt = (c: Client, headers: Record<string, string>) => Promise<Reply>;
  const routes = (ctx: { otherHandle: string; platformId: number }): Array<[string, Attempt]> => [
    ['POST /api/platforms', (c, h) => c.post('/api/platforms', { name: 'Evil', type: 'x' }, h)],
    ['POST /api/platforms/:id/activate', (c, h) => c.post(`/api/platforms/${ctx.platformId}/activate`, {}, h)],
    ['PATCH /api/session', (c, h) => c.patch('/api/session', { preferences: { theme: 'dark' } }, h)],
    ['DELETE /api/sessions/:handle', (c, h) => c.request('DELETE', `/api/sessions/${ctx.otherHandle}`, undefined, h)],
    ['POST /api/sessions/:handle/revoke', (c, h) => c.post(`/api/sessions/${ctx.otherHandle}/revoke`, {}, h)],
    ['POST /api/sessions/revoke-others', (c, h) => c.post('/api/sessions/revoke-others', {}, h)],
    ['POST /api/password', (c, h) => c.post('/api/password', { currentPassword: GOOD_PASSWORD, newPassword: 'a brand new passphrase 42' }, h)],
    ['POST /api/logout', (c, h) => c.post('/api/logout', {}, h)],
  ];

  async function expectNothingChanged(browser: Client, other: Client) {
    expect((await browser.get('/api/session')).status, 'still logged in').to.equal(200);
    expect((await other.get('/api/session')).status, 'the other session still works').to.equal(200);
    const platforms = (await browser.get('/api/platforms')).json.platforms as Array<{ name: string; active: boolean }>;
    expect(platforms.map((p) => p.name)).to.deep.equal(['Main']);
    expect(platforms.some((p) => p.active), 'no platform activated').to.equal(false);
    const me = await browser.get('/api/session');
    expect(me.json.preferences ?? {}).not.to.have.property('theme');
  }

  const variants: Array<[string, (token: string) => Record<string, string>]> = [
    ['without an X-CSRF-Token header', () => ({ 'X-CSRF-Token': '' })],
    ['with a wrong X-CSRF-Token', () => ({ 'X-CSRF-Token': 'not-the-token-00000000000' })],
    ['with a token of the wrong length', () => ({ 'X-CSRF-Token': 'x' })],
    ['with the token of another session', () => ({})], // filled in below
  ];

  for (const [variant, headersFor] of variants) {
    it(`answers 403 csrf_failed ${variant}, and changes nothing`, async () => {
      const ctx = await loggedIn();
      const stranger = new Client(app.url);
      await stranger.signup();
      for (const [name, attempt] of routes(ctx)) {
        const headers = variant.includes('another session') ? { 'X-CSRF-Token': stranger.csrfToken! } : headersFor(ctx.browser.csrfToken!);
        const res = await attempt(ctx.browser, headers);
        expect(res.status, `${name} ${variant}: ${res.text}`).to.equal(403);
        expectError(res, 403, 'csrf_failed');
      }
      await expectNothingChanged(ctx.browser, ctx.other);
    });
  }

  it('lets each of them through with the right token', async () => {
    const ctx = await loggedIn();
    const expected: Record<string, number> = {
      'POST /api/platforms': 201,
      'POST /api/platforms/:id/activate': 200,
      'PATCH /api/session': 200,
      'POST /api/password': 204,
      'DELETE /api/sessions/:handle': 204,
      // Past the check to the route, which finds the session the DELETE just ended.
      'POST /api/sessions/:handle/revoke': 404,
      'POST /api/sessions/revoke-others': 200,
      'POST /api/logout': 204,
    };
    for (const [name, attempt] of routes(ctx)) {
      const res = await attempt(ctx.browser, { 'X-CSRF-Token': ctx.browser.csrfToken! });
      expect(res.status, `${name}: ${res.text}`).to.equal(expected[name]);
    }
    expect((await ctx.browser.get('/api/session')).status, 'logged out at the end').to.equal(401);
  });

  it('accepts the token as the _csrf field of an urlencoded form', async () => {
    const { browser } = await loggedIn();
    const token = browser.csrfToken!;
    const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
    const formHeaders = { 'Content-Type': 'application/x-www-form-urlencoded', 'X-CSRF-Token': '' };

    const refused = await browser.post('/api/platforms', form({ name: 'Form', type: 'gitlab', _csrf: 'wrong' }), formHeaders);
    expectError(refused, 403, 'csrf_failed');
    const missing = await browser.post('/api/platforms', form({ name: 'Form', type: 'gitlab' }), formHeaders);
    expectError(missing, 403, 'csrf_failed');

    const created = await browser.post('/api/platforms', form({ name: 'Form', type: 'gitlab', _csrf: token }), formHeaders);
    expect(created.status, created.text).to.equal(201);
    expect(created.json.platform).to.include({ name: 'Form', type: 'gitlab' });

    const out = await browser.post('/api/logout', form({ _csrf: token }), formHeaders);
    expect(out.status).to.equal(204);
    expect((await browser.get('/api/session')).status).to.equal(401);
  });

  it('answers a multipart form 415 (its fields are not read), not that its token is wrong', async () => {
    const { browser } = await loggedIn();
    const form = new FormData();
    form.set('name', 'Multi');
    form.set('type', 'vcs');
    form.set('_csrf', browser.csrfToken!);
    const res = await fetch(`${browser.baseUrl}/api/platforms`, { method: 'POST', body: form, headers: { Cookie: [...browser.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
    expect(res.status).to.equal(415);
    expect(((await res.json()) as { error: { code: string } }).error.code).to.equal('unsupported_media_type');
    const names = ((await browser.get('/api/platforms')).json.platforms as Array<{ name: string }>).map((p) => p.name);
    expect(names).to.not.include('Multi');
  });

  it('takes the pages\' forms as a browser without JavaScript posts them: every named field, the _csrf one included', async () => {
    const { browser } = await loggedIn();
    /** The named inputs of form `id` on `page`, with their values, as the browser would send them. */
    const formOn = async (page: string, id: string) => {
      const html = (await browser.get(page, { Accept: 'text/html' })).text;
      const form = new RegExp(`<form id="${id}"[^>]*action="([^"]+)"[^>]*>([\\s\\S]*?)</form>`).exec(html);
      expect(form, `${page} has form #${id}`).to.not.equal(null);
      const fields: Record<string, string> = {};
      for (const input of form![2]!.matchAll(/<input\b[^>]*>/g)) {
        const name = /\bname="([^"]*)"/.exec(input[0])?.[1];
        if (name) fields[name] = /\bvalue="([^"]*)"/.exec(input[0])?.[1] ?? '';
      }
      return { action: form![1]!, fields };
    };
    const formHeaders = { 'Content-Type': 'application/x-www-form-urlencoded', 'X-CSRF-Token': '' };
    const post = (action: string, fields: Record<string, string>) => browser.post(action, new URLSearchParams(fields).toString(), formHeaders);

    const platform = await formOn('/', 'add-platform');
    expect(platform.fields._csrf).to.equal(browser.csrfToken);
    const created = await post(platform.action, { ...platform.fields, name: 'No script', type: 'gitlab' });
    expect(created.status, created.text).to.equal(201);

    const password = await formOn('/account', 'password');
    expect(Object.keys(password.fields).sort()).to.deep.equal(['_csrf', 'currentPassword', 'newPassword']);
    const changed = await post(password.action, { ...password.fields, currentPassword: GOOD_PASSWORD, newPassword: 'a brand new passphrase 77' });
    expect(changed.status, changed.text).to.equal(204);
  });

  it('accepts a _csrf field in a JSON body too', async () => {
    const { browser } = await loggedIn();
    const res = await browser.post('/api/platforms', { name: 'Json', type: 'x', _csrf: browser.csrfToken }, { 'X-CSRF-Token': '' });
    expect(res.status, res.text).to.equal(201);
  });

  it('answers a request no route takes as the router does (404, 405 with Allow), not as a CSRF failure', async () => {
    const { browser } = await loggedIn();
    const noToken = { 'X-CSRF-Token': '' };
    expectError(await browser.post('/api/no-such-thing', {}, noToken), 404, 'not_found');
    const wrongMethod = await browser.request('DELETE', '/api/platforms', undefined, noToken);
    expectError(wrongMethod, 405, 'method_not_allowed');
    expect(wrongMethod.headers.get('allow')).to.include('GET');
  });

  it('does not ask for one on login and signup however the path is spelled, as the router takes them', async () => {
    const { browser, email } = await loggedIn();
    const noToken = { 'X-CSRF-Token': '' };
    for (const path of ['/api/login', '/api/login/', '/API/Login']) {
      expect((await browser.post(path, { email, password: GOOD_PASSWORD }, noToken)).status, path).to.equal(200);
    }
    for (const path of ['/api/signup/', '/API/SIGNUP']) {
      const res = await browser.post(path, { email: `spelled-${Math.random().toString(36).slice(2)}@example.com`, password: GOOD_PASSWORD, name: 'S' }, noToken);
      expect(res.status, path).to.equal(201);
    }
  });

  it('does not ask for a token on reads', async () => {
    const { browser } = await loggedIn();
    for (const path of ['/api/session', '/api/sessions', '/api/platforms']) {
      expect((await browser.get(path, { 'X-CSRF-Token': 'wrong' })).status, path).to.equal(200);
    }
  });

  it('keeps the same token for the life of the session, across requests', async () => {
    const { browser } = await loggedIn();
    const token = browser.csrfToken;
    await browser.get('/api/sessions');
    const me = await browser.get('/api/session');
    expect(me.json.csrfToken).to.equal(token);
  });

  it('gives a new login a new token, and the old token does not work for it', async () => {
    const browser = new Client(app.url);
    const { email } = await browser.signup();
    const oldToken = browser.csrfToken!;
    await browser.login(email, GOOD_PASSWORD);
    expect(browser.csrfToken).to.be.a('string').and.not.equal(oldToken);
    expectError(await browser.post('/api/platforms', { name: 'A', type: 'b' }, { 'X-CSRF-Token': oldToken }), 403, 'csrf_failed');
  });
});
