/**
 * The pages' forms posted by a browser without JavaScript (form-navigation.ts): answered with a
 * page to go to, while every API client — a JSON body, no Sec-Fetch-Dest — gets the API's answer.
 * The browser flow itself is in test/e2e/browser.test.ts; here, the edges a browser seldom shows.
 */
import { expect } from 'chai';
import { connect } from 'node:net';
import { sample } from '../switching/metrics-text.js';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { expectError, GOOD_PASSWORD } from './helpers.js';

/** What Chromium sends with a form it submits itself, from a page of the same origin. */
const NAVIGATION = { 'Content-Type': 'application/x-www-form-urlencoded', 'Sec-Fetch-Dest': 'document', 'Sec-Fetch-Mode': 'navigate', 'Sec-Fetch-Site': 'same-origin', Origin: 'null' };

describe('forms posted without JavaScript', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp();
  });
  after(() => app?.stop());

  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

  it('log in: to the dashboard with the session cookie, or back to the form with the error, counted in the metrics as the API answered', async () => {
    const user = new Client(app.url);
    const { email } = await user.signup();
    const browser = new Client(app.url);
    const wrong = await browser.post('/api/login', form({ email, password: 'not the password' }), NAVIGATION);
    expect(wrong.status).to.equal(303);
    expect(wrong.headers.get('location')).to.equal('/login?error=invalid_credentials');
    expect(browser.sessionCookie()).to.equal(undefined);
    const right = await browser.post('/api/login', form({ email, password: GOOD_PASSWORD }), NAVIGATION);
    expect(right.status).to.equal(303);
    expect(right.headers.get('location')).to.equal('/');
    expect(right.headers.get('cache-control')).to.equal('no-store');
    expect(browser.sessionCookie()).to.be.a('string');
    expect((await browser.get('/api/session')).status).to.equal(200);

    const metrics = (await new Client(app.url).get('/metrics')).text;
    const requests = (status: string) => sample(metrics, 'http_request_duration_seconds_count', { method: 'POST', route: '/api/login', status });
    expect(requests('401'), 'the failed login, as the API answered it').to.be.at.least(1);
    expect(requests('200')).to.be.at.least(1);
    expect(requests('303'), 'no answer counted as the redirect it became').to.equal(0);
  });

  it('sign up posted twice (a double-click; the browser dropped the first answer): the second logs in, not "email taken"', async () => {
    const email = `twice-${Date.now()}@example.com`;
    const fields = form({ name: 'Twice', email, password: GOOD_PASSWORD });
    // Both at once, as Chromium sends them; and the second again after the first has answered.
    const [first, second] = [new Client(app.url), new Client(app.url)];
    const answers = await Promise.all([first.post('/api/signup', fields, NAVIGATION), second.post('/api/signup', fields, NAVIGATION)]);
    expect(answers.map((a) => [a.status, a.headers.get('location')])).to.deep.equal([
      [303, '/'],
      [303, '/'],
    ]);
    for (const browser of [first, second]) expect((await browser.get('/api/session')).status, 'signed in').to.equal(200);
    const later = new Client(app.url);
    expect((await later.post('/api/signup', fields, NAVIGATION)).headers.get('location'), 'moments later, the same').to.equal('/');
    expect((await later.get('/api/session')).status).to.equal(200);
    // Not a way into someone's account: another password, or another name, is told the address is taken.
    const other = await new Client(app.url).post('/api/signup', form({ name: 'Twice', email, password: 'another long passphrase' }), NAVIGATION);
    expect(other.headers.get('location')).to.equal('/signup?error=email_taken');
    const renamed = await new Client(app.url).post('/api/signup', form({ name: 'Someone Else', email, password: GOOD_PASSWORD }), NAVIGATION);
    expect(renamed.headers.get('location')).to.equal('/signup?error=email_taken');
    // An API client is told 409 email_taken, as API.md says, whatever the password.
    expectError(await new Client(app.url).post('/api/signup', { name: 'Twice', email, password: GOOD_PASSWORD }), 409, 'email_taken');
  });

  it('keeps the address of a signup whose browser dropped the connection before its answer (the first of a double-click)', async () => {
    const email = `dropped-${Date.now()}@example.com`;
    const body = JSON.stringify({ name: 'Dropped', email, password: GOOD_PASSWORD });
    const { host, port } = new URL(app.url);
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(port), host.split(':')[0]!, () => {
        socket.write(`POST /api/signup HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, () => {
          // Gone while the password is hashed, as a browser's first post of a double-click.
          socket.destroy();
          resolve();
        });
      });
      socket.on('error', reject);
    });
    const owner = new Client(app.url);
    let sessions: Array<{ ip: string }> = [];
    for (let attempt = 0; attempt < 100 && sessions.length === 0; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      if ((await owner.login(email, GOOD_PASSWORD)).status !== 200) continue;
      sessions = ((await owner.get('/api/sessions')).json.sessions as Array<{ ip: string; current?: boolean }>).filter((s) => !s.current);
    }
    expect(sessions, "the dropped signup's session").to.have.length(1);
    expect(sessions[0]!.ip).to.equal('127.0.0.1');
  });

  it('brings a refused form back with each field’s sentence and what was typed, never the password, once', async () => {
    const taken = await new Client(app.url).signup();
    const browser = new Client(app.url);
    const refused = await browser.post('/api/signup', form({ name: 'Kim <b>', email: 'not-an-email', password: 'short' }), NAVIGATION);
    expect(refused.status).to.equal(303);
    expect(refused.headers.get('location')).to.equal('/signup?error=invalid_input');
    const flash = browser.cookies.get('sid_form');
    expect(flash, 'carried in a cookie, not in the address').to.be.a('string');
    expect(flash).not.to.contain('Kim');
    expect(refused.headers.getSetCookie().find((c) => c.startsWith('sid_form='))).to.match(/; Max-Age=60; Path=\/; HttpOnly; SameSite=Lax$/);

    const page = (await browser.get('/signup?error=invalid_input', { Accept: 'text/html' })).text;
    expect(page).to.match(/<input id="signup-email"[^>]* value="not-an-email"[^>]* aria-invalid="true" autofocus/);
    expect(page).to.match(/<input id="signup-name"[^>]* value="Kim &lt;b&gt;"/);
    expect(page).not.to.match(/<input id="signup-password"[^>]* value=/);
    expect(page).to.contain('<p class="field-error" id="signup-email-error" aria-live="polite">Enter a valid email address</p>');
    expect(page).to.contain('<p class="field-error" id="signup-password-error" aria-live="polite"></p>');
    expect(browser.cookies.has('sid_form'), 'read once').to.equal(false);
    const again = (await browser.get('/signup?error=invalid_input', { Accept: 'text/html' })).text;
    expect(again).not.to.contain('value="not-an-email"');

    // A login refused keeps the email; a flash is only for its own form.
    await browser.post('/api/login', form({ email: taken.email, password: 'not the password' }), NAVIGATION);
    expect((await browser.get('/signup', { Accept: 'text/html' })).text).not.to.contain(taken.email);
    await browser.post('/api/login', form({ email: taken.email, password: 'not the password' }), NAVIGATION);
    const login = (await browser.get('/login?error=invalid_credentials', { Accept: 'text/html' })).text;
    expect(login).to.contain(`value="${taken.email}"`);
    expect(login).to.contain('Email or password is incorrect.');

    // Anything but our own seal is ignored.
    const forger = new Client(app.url);
    forger.cookies.set('sid_form', 'abcdef.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    const forged = await forger.get('/signup', { Accept: 'text/html' });
    expect(forged.status).to.equal(200);
    expect(forged.text).not.to.contain('aria-invalid');
  });

  it('keeps a refused form\'s flash within what a browser keeps (4096 bytes), giving up what was typed before the sentences', async () => {
    const browser = new Client(app.url);
    // 500 characters of CJK are 1,500 bytes each field: typed in full, the cookie came to 4,276 bytes.
    const long = '漢'.repeat(600);
    const refused = await browser.post('/api/signup', form({ name: long, email: `${long}@example.com`, password: 'short' }), NAVIGATION);
    expect(refused.status).to.equal(303);
    const cookie = refused.headers.getSetCookie().find((c) => c.startsWith('sid_form='))!;
    expect(Buffer.byteLength(cookie), 'the Set-Cookie line').to.be.at.most(4096);
    const page = (await browser.get('/signup?error=invalid_input', { Accept: 'text/html' })).text;
    expect(page, 'the sentences still come back').to.match(/<p class="field-error" id="signup-name-error" aria-live="polite">[^<]+<\/p>/);
    expect(page).to.match(/<input id="signup-name"[^>]* value="漢{60}"/);
  });

  it('says "You have been logged out." on /login after the logout button posted without JavaScript', async () => {
    const browser = new Client(app.url);
    await browser.signup();
    const out = await browser.post('/logout', form({ _csrf: browser.csrfToken! }), { ...NAVIGATION, 'X-CSRF-Token': '' });
    expect(out.status).to.equal(303);
    expect(out.headers.get('location')).to.equal('/login?signed_out=logout');
    expect((await browser.get('/api/session')).status).to.equal(401);
    expect((await browser.get('/login?signed_out=logout', { Accept: 'text/html' })).text).to.contain('role="status" aria-live="polite">You have been logged out.</p>');
    expect((await browser.get('/login?signed_out=%3Cb%3Ehacked', { Accept: 'text/html' })).text).not.to.contain('hacked');
  });

  it('sends a logout button posted with an out-of-date token to the dashboard, told the page had expired, and its next press logs out', async () => {
    const browser = new Client(app.url);
    const { email, password } = await browser.signup();
    const stale = browser.csrfToken!;
    // Another tab logs out and in again: a new session, a new token; this tab's page has the old one.
    expect((await browser.post('/api/logout')).status).to.equal(204);
    expect((await browser.login(email, password)).status).to.equal(200);
    const refused = await browser.post('/logout', form({ _csrf: stale }), { ...NAVIGATION, 'X-CSRF-Token': '' });
    expect(refused.status).to.equal(303);
    expect(refused.headers.get('location')).to.equal('/?logout_error=csrf_failed');
    const dashboard = await browser.get('/?logout_error=csrf_failed', { Accept: 'text/html' });
    // Said beside the logout button that was pressed, not in another form's box.
    expect(dashboard.text).to.contain('id="logout-error" role="alert" aria-live="assertive">This page had expired. Try again.</div>');
    expect(dashboard.text).to.contain('id="add-platform-error" role="alert" aria-live="assertive"></div>');
    expect((await browser.get('/api/session')).status, 'still logged in: nothing was done').to.equal(200);
    const out = await browser.post('/logout', form({ _csrf: browser.csrfToken! }), { ...NAVIGATION, 'X-CSRF-Token': '' });
    expect(out.headers.get('location')).to.equal('/login?signed_out=logout');
    expect((await browser.get('/api/session')).status).to.equal(401);
  });

  it('answers a browser opening an unknown address with a page, and every program with the JSON 404', async () => {
    const OPENED = { Accept: 'text/html', 'Sec-Fetch-Dest': 'document', 'Sec-Fetch-Mode': 'navigate' };
    const opened = await new Client(app.url).get('/favicon.ico', OPENED);
    expect([opened.status, opened.headers.get('content-type'), opened.headers.get('cache-control')]).to.deep.equal([404, 'text/html; charset=utf-8', 'no-store']);
    expect(opened.text).to.contain('<title>Page not found · Switchboard</title>');
    expectError(await new Client(app.url).get('/favicon.ico', { Accept: 'text/html' }), 404, 'not_found');
    expectError(await new Client(app.url).get('/api/nope', OPENED), 404, 'not_found');
    // A known page, and a method the path does not take, are answered as before.
    expect((await new Client(app.url).get('/login', OPENED)).status).to.equal(200);
    expectError(await new Client(app.url).get('/logout', OPENED), 405, 'method_not_allowed');
  });

  it('leaves API clients alone: a JSON body, or no Sec-Fetch-Dest, gets the API answer', async () => {
    const { email } = await new Client(app.url).signup();
    const json = await new Client(app.url).post('/api/login', { email, password: 'not the password' }, { 'Sec-Fetch-Dest': 'document' });
    expectError(json, 401, 'invalid_credentials');
    const fetched = await new Client(app.url).post('/api/login', form({ email, password: 'not the password' }), { ...NAVIGATION, 'Sec-Fetch-Dest': 'empty' });
    expectError(fetched, 401, 'invalid_credentials');
  });

  it('sends a form posted after its session ended to /login, with the reason', async () => {
    const browser = new Client(app.url);
    await browser.signup();
    const token = browser.csrfToken!;
    const cookie = browser.sessionCookie()!;
    await browser.post('/api/logout');
    const stale = new Client(app.url);
    stale.cookies.set('sid', cookie);
    const res = await stale.post('/api/platforms', form({ _csrf: token, name: 'Late', type: 'GitHub' }), NAVIGATION);
    expect(res.status).to.equal(303);
    expect(res.headers.get('location')).to.equal('/login?error=unauthenticated');
    const page = await new Client(app.url).get('/login?error=unauthenticated', { Accept: 'text/html' });
    expect(page.text).to.contain('You were logged out. Log in and try again.');
  });

  // The dashboard's and the sessions page's buttons, posted as a browser posts their forms: the
  // token in the `_csrf` field only, no header.
  const FORM_POST = { ...NAVIGATION, 'X-CSRF-Token': '' };
  const page = async (client: Client, path: string) => (await client.get(path, { Accept: 'text/html' })).text;

  it('switches platform: back to the dashboard with the platform active, or told that it no longer exists', async () => {
    const browser = new Client(app.url);
    await browser.signup();
    const { platform } = (await browser.post('/api/platforms', { name: 'Formless', type: 'GitHub' })).body as { platform: { id: number } };
    expect(await page(browser, '/'), 'the button posts the form to its platform').to.contain(`formaction="/api/platforms/${platform.id}/activate"`);
    const done = await browser.post(`/api/platforms/${platform.id}/activate`, form({ _csrf: browser.csrfToken! }), FORM_POST);
    expect(done.status).to.equal(303);
    expect(done.headers.get('location')).to.equal('/');
    expect(((await browser.get('/api/session')).body as { platform: { id: number } | null }).platform?.id).to.equal(platform.id);

    const gone = await browser.post('/api/platforms/999999/activate', form({ _csrf: browser.csrfToken! }), FORM_POST);
    expect(gone.headers.get('location')).to.equal('/?switch_error=not_found');
    const dashboard = await page(browser, '/?switch_error=not_found');
    expect(dashboard).to.contain('That platform no longer exists.');
    expect(dashboard, 'the add-platform form shows no error of the switch').to.match(/id="add-platform-error"[^>]*><\/div>/);
  });

  it('revokes one session or every other, and says so on the sessions page', async () => {
    const browser = new Client(app.url);
    const { email, password } = await browser.signup();
    const laptop = new Client(app.url);
    await laptop.login(email, password);
    const phone = new Client(app.url);
    await phone.login(email, password);
    const { sessions } = (await browser.get('/api/sessions')).body as { sessions: { handle: string; current: boolean }[] };
    const laptopHandle = ((await laptop.get('/api/session')).body as { session: { handle: string } }).session.handle;
    expect(sessions.map((s) => s.handle)).to.include(laptopHandle);
    expect(await page(browser, '/sessions')).to.contain(`formaction="/api/sessions/${encodeURIComponent(laptopHandle)}/revoke"`);

    const one = await browser.post(`/api/sessions/${encodeURIComponent(laptopHandle)}/revoke`, form({ _csrf: browser.csrfToken! }), FORM_POST);
    expect(one.status).to.equal(303);
    expect(one.headers.get('location')).to.equal('/sessions?revoked=one');
    expect((await laptop.get('/api/session')).status, 'the revoked device is logged out').to.equal(401);
    expect((await phone.get('/api/session')).status).to.equal(200);
    expect(await page(browser, '/sessions?revoked=one')).to.contain('Session revoked. That device is logged out.');

    const again = await browser.post(`/api/sessions/${encodeURIComponent(laptopHandle)}/revoke`, form({ _csrf: browser.csrfToken! }), FORM_POST);
    expect(again.headers.get('location')).to.equal('/sessions?error=not_found');
    expect(await page(browser, '/sessions?error=not_found')).to.contain('That session had already ended.');

    const noToken = await browser.post('/api/sessions/revoke-others', form({}), FORM_POST);
    expect(noToken.headers.get('location')).to.equal('/sessions?error=csrf_failed');
    expect((await phone.get('/api/session')).status, 'a post without the token revokes nothing').to.equal(200);

    const others = await browser.post('/api/sessions/revoke-others', form({ _csrf: browser.csrfToken! }), FORM_POST);
    expect(others.headers.get('location')).to.equal('/sessions?revoked=others');
    expect((await phone.get('/api/session')).status).to.equal(401);
    expect((await browser.get('/api/session')).status, 'this session goes on').to.equal(200);
    expect(await page(browser, '/sessions?revoked=others')).to.contain('Logged out every other session.');
  });

  it('gives API clients the revoke route as well: POST /api/sessions/:handle/revoke answers as DELETE does', async () => {
    const browser = new Client(app.url);
    const { email, password } = await browser.signup();
    const other = new Client(app.url);
    await other.login(email, password);
    const handle = ((await other.get('/api/session')).body as { session: { handle: string } }).session.handle;
    expect((await browser.post(`/api/sessions/${handle}/revoke`)).status).to.equal(204);
    expect((await other.get('/api/session')).status).to.equal(401);
    expectError(await browser.post(`/api/sessions/${handle}/revoke`), 404, 'not_found');
  });
});
