/**
 * Sign-up, login, logout and "who am I", as a browser or API client sees them (API.md, HTTP
 * API and Cookies).
 */
import { expect } from 'chai';
import path from 'node:path';
import { QueryTypes } from 'sequelize';
import { openDatabase } from '../../src/db/database.js';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { cookieAttributes, expectError, expectNoSecrets, GOOD_PASSWORD, setCookieFor, uniqueEmail } from './helpers.js';

describe('signing up, logging in and out', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ LOGIN_MAX_FAILURES: '3' });
  });
  after(() => app?.stop());

  describe('POST /api/signup', () => {
    it('creates the account, answers 201 {user} and logs the new user in with a safe session cookie', async () => {
      const browser = new Client(app.url);
      const email = uniqueEmail('signup');
      const res = await browser.post('/api/signup', { email, password: GOOD_PASSWORD, name: 'Ann' });
      expect(res.status).to.equal(201);
      expect(res.headers.get('content-type')).to.match(/application\/json/);
      expect(res.headers.get('cache-control'), 'it carries the CSRF token: never cached').to.equal('no-store');
      const user = res.json.user as Record<string, unknown>;
      expect(user).to.include({ email, name: 'Ann' });
      expect(user.id).to.be.a('number');

      const line = setCookieFor(res);
      expect(line, 'Set-Cookie for sid').to.be.a('string');
      const attrs = cookieAttributes(line!);
      expect(attrs.get('httponly'), 'HttpOnly').to.equal(true);
      expect(String(attrs.get('samesite')).toLowerCase(), 'SameSite').to.equal('lax');
      expect(attrs.get('path'), 'Path').to.equal('/');
      expect(attrs.has('secure'), 'no Secure without COOKIE_SECURE').to.equal(false);

      const me = await browser.get('/api/session');
      expect(me.status).to.equal(200);
      expect(me.json.authenticated).to.equal(true);
      expect((me.json.user as { id: number }).id).to.equal(user.id);
    });

    it('never shows a password or a hash in a user object', async () => {
      const browser = new Client(app.url);
      const email = uniqueEmail('nosecret');
      const signup = await browser.post('/api/signup', { email, password: GOOD_PASSWORD, name: 'Bo' });
      expect(signup.status).to.equal(201);
      expectNoSecrets(signup.json);
      expect(signup.text).not.to.include(GOOD_PASSWORD);
      const me = await browser.get('/api/session');
      expectNoSecrets(me.json);
      const login = await new Client(app.url).login(email, GOOD_PASSWORD);
      expect(login.status).to.equal(200);
      expectNoSecrets(login.json);
      expect(login.text).not.to.match(/\$argon2/);
    });

    it('refuses an email that is already taken with 409 email_taken, whatever its letter case', async () => {
      const email = uniqueEmail('taken');
      await new Client(app.url).signup({ email });
      expectError(await new Client(app.url).post('/api/signup', { email, password: GOOD_PASSWORD, name: 'Dup' }), 409, 'email_taken');
      const shouted = await new Client(app.url).post('/api/signup', { email: email.toUpperCase(), password: GOOD_PASSWORD, name: 'Dup' });
      expectError(shouted, 409, 'email_taken');
    });

    const bad: Array<[string, unknown]> = [
      ['an empty body', {}],
      ['a missing password', { email: 'x@example.com', name: 'X' }],
      ['a missing email', { password: GOOD_PASSWORD, name: 'X' }],
      ['a missing name', { email: 'x@example.com', password: GOOD_PASSWORD }],
      ['an email that is a number', { email: 42, password: GOOD_PASSWORD, name: 'X' }],
      ['a password that is an array', { email: 'x@example.com', password: ['a'], name: 'X' }],
      ['a name that is an object', { email: 'x@example.com', password: GOOD_PASSWORD, name: { first: 'X' } }],
      ['an email without an @', { email: 'not-an-email', password: GOOD_PASSWORD, name: 'X' }],
      ['an unknown field', { email: 'x@example.com', password: GOOD_PASSWORD, name: 'X', role: 'admin' }],
      ['a too-short password', { email: 'x@example.com', password: 'abc', name: 'X' }],
      ['a common password ("password")', { email: 'x@example.com', password: 'password', name: 'X' }],
      ['a common password ("12345678")', { email: 'x@example.com', password: '12345678', name: 'X' }],
      ['a password of eight spaces', { email: 'x@example.com', password: '        ', name: 'X' }],
      ['a password of one repeated character', { email: 'x@example.com', password: 'zzzzzzzzzzzz', name: 'X' }],
      ['a name with a lone surrogate (not text)', { email: 'x@example.com', password: GOOD_PASSWORD, name: 'a\ud800b' }],
      // As UTF-8 it would hash like 'abc\ufffddefghijk' and any other lone surrogate there.
      ['a password with a lone surrogate', { email: 'x@example.com', password: 'abc\ud800defghijk', name: 'X' }],
      ['an email with a lone surrogate', { email: 'x\udc00@example.com', password: GOOD_PASSWORD, name: 'X' }],
      ['a JSON array instead of an object', [1, 2, 3]],
      ['a JSON string instead of an object', 'just a string'],
    ];
    for (const [what, body] of bad) {
      it(`answers 400 invalid_input for ${what}, and creates no session`, async () => {
        const client = new Client(app.url);
        const res = await client.post('/api/signup', typeof body === 'string' ? JSON.stringify(body) : body, { 'Content-Type': 'application/json' });
        expectError(res, 400, 'invalid_input');
        expect(setCookieFor(res), 'no session cookie').to.equal(undefined);
        expect((await client.get('/api/session')).status).to.equal(401);
      });
    }

    it('refuses an address no mail server would take, naming the email field, and accepts the unusual ones that work', async () => {
      const refused = ['a@example..com', 'a..b@example.com', '.a@example.com', 'a.@example.com', 'x<script>@example.com', 'a,b@example.com', `${'a'.repeat(65)}@example.com`, 'a@-example.com', 'a@example-.com'];
      // Another spelling of an ordinary address (IDNA reads exampⅼe.com as example.com): a look-alike second account.
      refused.push('ann@examp\u217Ce.com', 'ann@\u212Fxample.com', 'x\uFB01n@example.com', 'x\u017Fn@example.com', 'x\u2460n@example.com', 'x\u1D43n@example.com');
      for (const address of refused) {
        const { error } = expectError(await new Client(app.url).post('/api/signup', { email: address, password: GOOD_PASSWORD, name: 'X' }), 400, 'invalid_input');
        expect(error.message, address).to.match(/^email: /);
      }
      const tag = Math.random().toString(36).slice(2, 8);
      for (const local of [`user+${tag}`, `o'brien.${tag}`, `${tag}${'a'.repeat(58)}`, `ünïcødé-${tag}`]) {
        const res = await new Client(app.url).post('/api/signup', { email: `${local}@exämple.com`, password: GOOD_PASSWORD, name: 'X' });
        expect(res.status, `${local}: ${res.text}`).to.equal(201);
      }
      // Logging in is not judged by the new rule: an account signed up under looser rules gets in.
      expectError(await new Client(app.url).login('a..b@example.com', GOOD_PASSWORD), 401, 'invalid_credentials');
    });

    it('refuses a cross-site Origin with 403 and creates nothing', async () => {
      const email = uniqueEmail('xsite');
      const res = await new Client(app.url).post('/api/signup', { email, password: GOOD_PASSWORD, name: 'Eve' }, { Origin: 'https://evil.example' });
      expect(res.status).to.equal(403);
      expectError(res, 403);
      expect(setCookieFor(res)).to.equal(undefined);
      // The account was not created: the address is still free.
      expect((await new Client(app.url).post('/api/signup', { email, password: GOOD_PASSWORD, name: 'Real' })).status).to.equal(201);
    });

    it('accepts a same-origin Origin', async () => {
      const res = await new Client(app.url).post('/api/signup', { email: uniqueEmail('same'), password: GOOD_PASSWORD, name: 'Sam' }, { Origin: app.url });
      expect(res.status).to.equal(201);
    });
  });

  describe('POST /api/login', () => {
    it('answers 200 {user, session, csrfToken} and sets a session cookie', async () => {
      const { email } = await new Client(app.url).signup();
      const browser = new Client(app.url);
      const res = await browser.login(email, GOOD_PASSWORD);
      expect(res.status).to.equal(200);
      expect((res.json.user as { email: string }).email).to.equal(email);
      expect(res.json.csrfToken).to.be.a('string').with.length.greaterThan(15);
      expect(res.headers.get('cache-control'), 'the token is never kept by a cache').to.equal('no-store');
      const session = res.json.session as Record<string, unknown>;
      expect(session).to.have.keys(['handle', 'backend', 'createdAt', 'lastActivity', 'expiresAt']);
      expect(session.backend).to.equal('database');
      for (const k of ['createdAt', 'lastActivity', 'expiresAt']) expect(Number.isNaN(Date.parse(String(session[k]))), k).to.equal(false);
      const attrs = cookieAttributes(setCookieFor(res)!);
      expect(attrs.get('httponly')).to.equal(true);
      expect(String(attrs.get('samesite')).toLowerCase()).to.equal('lax');
      expect(attrs.get('path')).to.equal('/');
      // The handle is public; it is not the secret cookie value.
      expect(browser.sessionCookie()).not.to.include(String(session.handle));
    });

    it('accepts the email in any letter case', async () => {
      const { email } = await new Client(app.url).signup();
      expect((await new Client(app.url).login(email.toUpperCase(), GOOD_PASSWORD)).status).to.equal(200);
    });

    it('accepts the email however its accents were typed (one character, or letter + combining mark)', async () => {
      const tag = uniqueEmail('jose').replace('jose', 'jos\u00e9');
      const decomposed = tag.normalize('NFD');
      expect(decomposed).not.to.equal(tag);
      const { status } = await new Client(app.url).post('/api/signup', { email: tag, password: GOOD_PASSWORD, name: 'José' });
      expect(status).to.equal(201);
      expect((await new Client(app.url).login(decomposed, GOOD_PASSWORD)).status, 'logs in').to.equal(200);
      expectError(await new Client(app.url).post('/api/signup', { email: decomposed, password: GOOD_PASSWORD, name: 'José' }), 409, 'email_taken');
    });

    it('accepts the password however its accents were typed, and refuses look-alike addresses', async () => {
      const email = uniqueEmail('pw');
      const password = 'P\u00e4ssw\u00f6rd of the long kind';
      expect((await new Client(app.url).post('/api/signup', { email, password, name: 'P' })).status).to.equal(201);
      expect((await new Client(app.url).login(email, password.normalize('NFD'))).status, 'typed decomposed').to.equal(200);
      expect((await new Client(app.url).login(email, password)).status, 'typed composed').to.equal(200);
      const [local, domain] = email.split('@');
      for (const lookalike of [`${local}\u200b@${domain}`, `\u202e${email}`, `${local}\u00ad@${domain}`, `${email}.`]) {
        const { error } = expectError(await new Client(app.url).post('/api/signup', { email: lookalike, password: GOOD_PASSWORD, name: 'L' }), 400, 'invalid_input');
        expect(error.message, JSON.stringify(lookalike)).to.match(/^email: /);
      }
      for (const name of ['evil\u202eexe.txt', 'mark\u200fed', 'arabic\u061cmark']) expectError(await new Client(app.url).post('/api/signup', { email: uniqueEmail('bidi'), password: GOOD_PASSWORD, name }), 400, 'invalid_input');
      for (const wide of [`${email}\u3002`, `${email}\uff0e`, email.replace('example', '\uff45xample')]) {
        expectError(await new Client(app.url).post('/api/signup', { email: wide, password: GOOD_PASSWORD, name: 'W' }), 400, 'invalid_input');
      }
    });

    it('refuses a name with nothing to see (zero-width characters, fillers), and keeps emoji joined by them', async () => {
      for (const name of ['\u200b', '\u200b\u200d\u2060', '\u3164', ' \u2800 ']) {
        const { error } = expectError(await new Client(app.url).post('/api/signup', { email: uniqueEmail('blank'), password: GOOD_PASSWORD, name }), 400, 'invalid_input');
        expect(error.message, JSON.stringify(name)).to.match(/^name: .*visible/);
      }
      const family = '\u{1F468}\u200d\u{1F469}\u200d\u{1F467}';
      const res = await new Client(app.url).post('/api/signup', { email: uniqueEmail('emoji'), password: GOOD_PASSWORD, name: family });
      expect(res.status).to.equal(201);
      expect((res.json.user as { name: string }).name).to.equal(family);
    });

    it('judges a password as it is hashed: a full-width spelling of a common one is refused too', async () => {
      for (const password of ['\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18', '\uff41a\uff41a\uff41a\uff41a']) {
        expectError(await new Client(app.url).post('/api/signup', { email: uniqueEmail('wide'), password, name: 'W' }), 400, 'invalid_input');
      }
    });

    it('never repeats a password back: JSON sent as a form is one unknown field, not named', async () => {
      const secret = 'MySecretPass123-do-not-echo';
      const res = await fetch(`${app.url}/api/login`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: JSON.stringify({ password: secret, email: 'ann@example.com' }) });
      const text = await res.text();
      expect(res.status).to.equal(400);
      expect(text).not.to.include(secret);
      expect((JSON.parse(text) as { error: { code: string; message: string } }).error).to.include({ code: 'invalid_input' });
      // A password holding `&`: the form splits it, and the part after is a well-formed field name.
      const split = await fetch(`${app.url}/api/login`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: JSON.stringify({ email: 'ann@example.com', password: 'hunter2&secretPart=rest' }) });
      const splitText = await split.text();
      expect(split.status).to.equal(400);
      expect(splitText).not.to.include('secretPart');
    });

    it('issues a brand-new session id every time, and the one it replaced stops working', async () => {
      const browser = new Client(app.url);
      const { email } = await browser.signup();
      const first = browser.sessionCookie()!;
      const firstHandle = ((await browser.get('/api/session')).json.session as { handle: string }).handle;
      expect((await browser.login(email, GOOD_PASSWORD)).status).to.equal(200);
      const second = browser.sessionCookie()!;
      expect(second).to.be.a('string').and.not.equal(first);
      const me = await browser.get('/api/session');
      expect(me.status).to.equal(200);
      expect((me.json.session as { handle: string }).handle).not.to.equal(firstHandle);

      const replay = new Client(app.url);
      replay.cookies.set('sid', first);
      expectError(await replay.get('/api/session'), 401);

      // Two logins from two places: two different ids, both live.
      const other = new Client(app.url);
      await other.login(email, GOOD_PASSWORD);
      expect(other.sessionCookie()).not.to.equal(second);
      expect((await other.get('/api/session')).status).to.equal(200);
      expect((await browser.get('/api/session')).status).to.equal(200);
    });

    it('answers 401 invalid_credentials with the same code and message for an unknown email and a wrong password', async () => {
      const { email } = await new Client(app.url).signup();
      const unknown = await new Client(app.url).login(uniqueEmail('nobody'), GOOD_PASSWORD);
      const wrong = await new Client(app.url).login(email, 'not the right password at all');
      const a = expectError(unknown, 401, 'invalid_credentials');
      const b = expectError(wrong, 401, 'invalid_credentials');
      expect(a.error.message).to.equal(b.error.message);
      expect(setCookieFor(wrong)).to.equal(undefined);
    });

    it('answers 400 invalid_input for missing, wrong-typed or unknown fields', async () => {
      for (const body of [{}, { email: 'a@example.com' }, { email: 1, password: 'x' }, { email: 'a@example.com', password: null }, { email: 'a@example.com', password: GOOD_PASSWORD, remember: true }]) {
        expectError(await new Client(app.url).post('/api/login', body), 400, 'invalid_input');
      }
    });

    it('names every unknown field, even one called like an object method', async () => {
      for (const field of ['toString', 'constructor', 'hasOwnProperty']) {
        const { error } = expectError(await new Client(app.url).post('/api/login', { email: 'a@example.com', password: 'x', [field]: 1 }), 400, 'invalid_input');
        expect(error.message, field).to.include(`${field}: Unknown field`);
      }
    });

    it('answers 429 too_many_attempts with Retry-After after repeated failures, even for the right password', async () => {
      const { email } = await new Client(app.url).signup();
      const client = new Client(app.url);
      for (let i = 0; i < 3; i++) expectError(await client.login(email, `wrong password ${i}`), 401, 'invalid_credentials');
      const limited = await client.login(email, 'wrong password again');
      expectError(limited, 429, 'too_many_attempts');
      const retryAfter = Number(limited.headers.get('retry-after'));
      expect(retryAfter, 'Retry-After in seconds').to.be.a('number').and.at.least(1);
      expect(Number.isInteger(retryAfter)).to.equal(true);
      const right = await client.login(email, GOOD_PASSWORD);
      expectError(right, 429, 'too_many_attempts');
      expect(right.headers.get('retry-after')).to.match(/^\d+$/);
      expect(setCookieFor(right)).to.equal(undefined);
    });

    it('counts wrong passwords sent at once: no more are checked than the limit allows', async () => {
      const { email } = await new Client(app.url).signup();
      // Counted only once checked, 20 guesses sent together all got their check (the limit is 3).
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => new Client(app.url).login(email, `wrong password ${i}`)));
      const statuses = answers.map((r) => r.status).sort();
      expect(statuses.filter((s) => s === 401), 'guesses checked').to.have.length(3);
      expect(statuses.filter((s) => s === 429), 'guesses refused').to.have.length(17);
      for (const r of answers.filter((a) => a.status === 429)) expect(r.headers.get('retry-after')).to.match(/^\d+$/);
      expectError(await new Client(app.url).login(email, GOOD_PASSWORD), 429, 'too_many_attempts');
    });

    it('lets in every login with the right password sent at once, even more than the limit', async () => {
      const { email } = await new Client(app.url).signup();
      // Twice the limit: the second batch waits for the first's password checks, which must end
      // within the limiter's 10 s wait — a third batch (8 logins) missed it on a loaded machine.
      const answers = await Promise.all(Array.from({ length: 6 }, () => new Client(app.url).login(email, GOOD_PASSWORD)));
      expect(answers.map((r) => r.status)).to.deep.equal(answers.map(() => 200));
      expect(new Set(answers.map((r) => setCookieFor(r))).size, 'a session each').to.equal(6);
    });

    it('counts failures for unknown emails too', async () => {
      const email = uniqueEmail('ghost');
      for (let i = 0; i < 3; i++) expectError(await new Client(app.url).login(email, GOOD_PASSWORD), 401, 'invalid_credentials');
      expectError(await new Client(app.url).login(email, GOOD_PASSWORD), 429, 'too_many_attempts');
    });

    it('accepts Origin: null from a form post the browser marks Sec-Fetch-Site: same-origin (the pages send no referrer)', async () => {
      const { email } = await new Client(app.url).signup();
      const res = await new Client(app.url).post('/api/login', { email, password: GOOD_PASSWORD }, { Origin: 'null', 'Sec-Fetch-Site': 'same-origin' });
      expect(res.status, res.text).to.equal(200);
      for (const site of ['cross-site', 'same-site', 'none']) {
        expectError(await new Client(app.url).post('/api/login', { email, password: GOOD_PASSWORD }, { Origin: 'null', 'Sec-Fetch-Site': site }), 403, 'csrf_failed');
      }
    });

    it('refuses a cross-site Origin with 403 and sets no cookie', async () => {
      const { email } = await new Client(app.url).signup();
      for (const origin of ['https://evil.example', 'null', `http://127.0.0.1.evil.example:${app.port}`, 'not a url']) {
        const res = await new Client(app.url).post('/api/login', { email, password: GOOD_PASSWORD }, { Origin: origin });
        expectError(res, 403);
        expect(setCookieFor(res), origin).to.equal(undefined);
      }
    });

    it('refuses a request a browser marks Sec-Fetch-Site: cross-site', async () => {
      const { email } = await new Client(app.url).signup();
      const res = await new Client(app.url).post('/api/login', { email, password: GOOD_PASSWORD }, { 'Sec-Fetch-Site': 'cross-site' });
      expectError(res, 403);
    });

    it('accepts a same-origin Origin', async () => {
      const { email } = await new Client(app.url).signup();
      expect((await new Client(app.url).post('/api/login', { email, password: GOOD_PASSWORD }, { Origin: app.url })).status).to.equal(200);
    });
  });

  describe('POST /api/logout', () => {
    it('answers 204, clears the cookie, and the old cookie is useless afterwards', async () => {
      const browser = new Client(app.url);
      await browser.signup();
      const stolen = browser.sessionCookie()!;
      const res = await browser.post('/api/logout');
      expect(res.status).to.equal(204);
      expect(res.text).to.equal('');
      const line = setCookieFor(res);
      expect(line, 'Set-Cookie clearing sid').to.be.a('string');
      const attrs = cookieAttributes(line!);
      const expires = attrs.get('expires');
      const cleared = line!.startsWith('sid=;') || (typeof expires === 'string' && Date.parse(expires) <= Date.now()) || attrs.get('max-age') === '0';
      expect(cleared, `cookie cleared: ${line}`).to.equal(true);
      expect(browser.sessionCookie()).to.equal(undefined);
      expectError(await browser.get('/api/session'), 401);

      const replay = new Client(app.url);
      replay.cookies.set('sid', stolen);
      expectError(await replay.get('/api/session'), 401);
      expectError(await replay.get('/api/sessions'), 401);
    });

    it('ignores whatever body comes with it: a malformed, oversized or unreadable one still logs out', async () => {
      for (const [type, body] of [
        ['application/json', '{garbage'],
        ['application/json', `{"x":"${'y'.repeat(20_000)}"}`],
        ['text/plain', 'bye'],
        ['application/x-www-form-urlencoded', '%E0%A4%A'],
      ]) {
        const browser = new Client(app.url);
        await browser.signup();
        const stolen = browser.sessionCookie()!;
        const res = await browser.request('POST', '/api/logout', body, { 'Content-Type': type! });
        expect(res.status, `${type} ${body!.slice(0, 20)}: ${res.text}`).to.equal(204);
        const replay = new Client(app.url);
        replay.cookies.set('sid', stolen);
        expectError(await replay.get('/api/session'), 401);
      }
    });
  });

  describe('GET /api/session', () => {
    it('answers 401 {authenticated: false, error} without a session', async () => {
      const res = await new Client(app.url).get('/api/session');
      const body = expectError(res, 401);
      expect(body.authenticated).to.equal(false);
    });

    it('answers 200 {authenticated, user, session, platform, csrfToken} with one', async () => {
      const browser = new Client(app.url);
      await browser.signup();
      const res = await browser.get('/api/session');
      expect(res.status).to.equal(200);
      expect(res.json).to.include.keys(['authenticated', 'user', 'session', 'platform', 'csrfToken']);
      expect(res.json.authenticated).to.equal(true);
      expect(res.json.platform).to.equal(null);
      expect(res.json.csrfToken).to.equal(browser.csrfToken);
    });

    it('answers 401 for the other authenticated routes too', async () => {
      const anon = new Client(app.url);
      for (const [method, path] of [
        ['GET', '/api/sessions'],
        ['GET', '/api/platforms'],
        ['POST', '/api/platforms'],
        ['POST', '/api/sessions/revoke-others'],
        ['DELETE', '/api/sessions/abc'],
        ['POST', '/api/password'],
      ] as const) {
        const res = await anon.request(method, path, method === 'GET' || method === 'DELETE' ? undefined : {});
        expect(res.status, `${method} ${path}`).to.equal(401);
        expectError(res, 401);
      }
    });
  });

  describe('PATCH /api/session (preferences)', () => {
    it('merges preferences into the session, removes a key sent as null, and keeps at most 20 in all', async () => {
      const user = new Client(app.url);
      await user.signup();
      const twenty = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i]));
      expect((await user.patch('/api/session', { preferences: twenty })).status).to.equal(200);
      const more = await user.patch('/api/session', { preferences: { extra: 'x' } });
      expectError(more, 400, 'invalid_input');
      expect((await user.get('/api/session')).json.preferences, 'nothing changed').to.deep.equal(twenty);

      const swapped = await user.patch('/api/session', { preferences: { k0: null, k1: null, theme: 'dark' } });
      expect(swapped.status, swapped.text).to.equal(200);
      const { k0: _k0, k1: _k1, ...rest } = twenty;
      expect((await user.get('/api/session')).json.preferences).to.deep.equal({ ...rest, theme: 'dark' });
    });

    it('says in words what is wrong with a refused change, field by field', async () => {
      const user = new Client(app.url);
      await user.signup();
      for (const [body, field, message] of [
        [{}, 'preferences', 'Send an object of preference names and values'],
        [{ preferences: 'dark' }, 'preferences', 'Send an object of preference names and values'],
        [{ preferences: { theme: ['dark'] } }, 'preferences.theme', 'A preference is a string, a number, true, false, or null to remove it'],
        [{ preferences: { theme: 'd'.repeat(201) } }, 'preferences.theme', 'A preference value has at most 200 characters'],
        [{ preferences: { ['t'.repeat(41)]: 1 } }, 'preferences', 'A preference name has at most 40 characters'],
      ] as const) {
        const res = await user.patch('/api/session', body);
        const { error } = expectError(res, 400, 'invalid_input');
        expect(error.message, JSON.stringify(body)).to.equal(`${field}: ${message}`);
      }
    });
  });
});

describe('the session cookie with COOKIE_SECURE=true', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ COOKIE_SECURE: 'true' });
  });
  after(() => app?.stop());

  it('is Secure, HttpOnly, SameSite=Lax and Path=/ on signup and login', async () => {
    const browser = new Client(app.url);
    const email = uniqueEmail('secure');
    const signup = await browser.post('/api/signup', { email, password: GOOD_PASSWORD, name: 'Sec' });
    expect(signup.status).to.equal(201);
    const login = await new Client(app.url).login(email, GOOD_PASSWORD);
    expect(login.status).to.equal(200);
    for (const res of [signup, login]) {
      const attrs = cookieAttributes(setCookieFor(res)!);
      expect(attrs.get('secure'), 'Secure').to.equal(true);
      expect(attrs.get('httponly')).to.equal(true);
      expect(String(attrs.get('samesite')).toLowerCase()).to.equal('lax');
      expect(attrs.get('path')).to.equal('/');
    }
  });

  it('is cleared with the same attributes on logout', async () => {
    const browser = new Client(app.url);
    await browser.signup();
    const res = await browser.post('/api/logout');
    expect(res.status).to.equal(204);
    const attrs = cookieAttributes(setCookieFor(res)!);
    expect(attrs.get('secure')).to.equal(true);
    expect(attrs.get('path')).to.equal('/');
  });
});

describe('login rate limiting across addresses', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ TRUST_PROXY: 'true', LOGIN_MAX_FAILURES: '2', LOGIN_MAX_FAILURES_PER_ACCOUNT: '5' });
  });
  after(() => app?.stop());

  it('stops guessing at one account spread over many addresses, with the account cap', async () => {
    const { email } = await new Client(app.url).signup();
    const from = (n: number) => ({ 'X-Forwarded-For': `198.51.100.${n}` });
    // Two addresses, two failures each: each address is at its own limit, the account at 4 of 5.
    for (const n of [1, 2]) for (let i = 0; i < 2; i++) expectError(await new Client(app.url).post('/api/login', { email, password: `guess ${n}.${i}` }, from(n)), 401, 'invalid_credentials');
    expectError(await new Client(app.url).post('/api/login', { email, password: 'guess 3.0' }, from(3)), 401, 'invalid_credentials');
    // The fifth failure spent the account's cap: a new address gets 429, even with the password.
    expectError(await new Client(app.url).post('/api/login', { email, password: GOOD_PASSWORD }, from(4)), 429, 'too_many_attempts');
    // Another account is not affected.
    const other = await new Client(app.url).signup();
    expect((await new Client(app.url).post('/api/login', { email: other.email, password: GOOD_PASSWORD }, from(4))).status).to.equal(200);
  });

  it('takes the address the proxy appended, not what the client put before it', async () => {
    const { email } = await new Client(app.url).signup();
    const spoofed = (n: number) => ({ 'X-Forwarded-For': `9.9.9.${n}, 203.0.113.7` });
    for (let n = 0; n < 2; n++) expectError(await new Client(app.url).post('/api/login', { email, password: `guess ${n}` }, spoofed(n)), 401, 'invalid_credentials');
    expectError(await new Client(app.url).post('/api/login', { email, password: 'guess 2' }, spoofed(2)), 429, 'too_many_attempts');
  });
});

describe('a password check that argon2 cannot run', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ LOGIN_MAX_FAILURES: '2' });
  });
  after(() => app?.stop());

  // Valid in form, but asks for 4 TiB: argon2's C library answers "Memory allocation error", as
  // it does on a machine out of memory.
  const UNRUNNABLE = '$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';

  it('answers 503 rather than "wrong password", and does not count it against the account', async () => {
    const { email, password } = await new Client(app.url).signup();
    const db = await openDatabase(`sqlite:${path.join(app.dataDir, 'switchboard.sqlite')}`);
    try {
      const rows = await db.query<{ hash: string }>('SELECT password_hash AS hash FROM users WHERE email = ?', { replacements: [email], type: QueryTypes.SELECT });
      const hash = rows[0]!.hash;
      await db.query('UPDATE users SET password_hash = ? WHERE email = ?', { replacements: [UNRUNNABLE, email] });
      // Three times, past LOGIN_MAX_FAILURES: as wrong passwords these would lock the account.
      for (let i = 0; i < 3; i++) expectError(await new Client(app.url).post('/api/login', { email, password }), 503, 'service_unavailable');
      await db.query('UPDATE users SET password_hash = ? WHERE email = ?', { replacements: [hash, email] });
    } finally {
      await db.close();
    }
    expect((await new Client(app.url).post('/api/login', { email, password })).status, 'the right password once argon2 can check it').to.equal(200);
  });
});
