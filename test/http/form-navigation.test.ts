/**
 * The pages' forms posted by a browser without JavaScript (form-navigation.ts): answered with a
 * page to go to, while every API client — a JSON body, no Sec-Fetch-Dest — gets the API's answer.
 * The browser flow itself is in test/e2e/browser.test.ts; here, the edges a browser seldom shows.
 */
import { expect } from 'chai';
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
});
