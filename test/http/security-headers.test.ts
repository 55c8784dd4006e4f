/**
 * Security headers, as a browser receives them: pages get helmet's full set with a strict
 * Content-Security-Policy; JSON answers get the API set (OWASP REST Security cheat sheet).
 * Both are precomputed at start (src/http/security-headers.ts), so they are checked here on
 * real answers, error answers included.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { GOOD_PASSWORD, uniqueEmail } from './helpers.js';

describe('security headers', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp();
  });
  after(() => app?.stop());

  it('pages: a CSP that allows only same-origin scripts and styles, no inline', async () => {
    const page = await new Client(app.url).get('/login');
    expect(page.status).to.equal(200);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).to.include("script-src 'self'").and.include("style-src 'self'").and.include("frame-ancestors 'none'");
    expect(csp).to.not.include('unsafe-inline');
    expect(page.headers.get('x-content-type-options')).to.equal('nosniff');
    // Browsers without frame-ancestors read this one: it must say the same (not SAMEORIGIN).
    expect(page.headers.get('x-frame-options')).to.equal('DENY');
    expect(page.headers.get('strict-transport-security')).to.match(/max-age=\d+/);
    expect(page.headers.get('referrer-policy')).to.equal('no-referrer');
  });

  it('API answers, success and error alike: nothing may be framed, sniffed or loaded from them', async () => {
    const browser = new Client(app.url);
    await browser.post('/api/signup', { email: uniqueEmail('hdr'), password: GOOD_PASSWORD, name: 'Hedda' });
    const replies = [await browser.get('/api/session'), await new Client(app.url).get('/api/session'), await browser.get('/api/nowhere'), await browser.get('/healthz')];
    expect(replies.map((r) => r.status)).to.deep.equal([200, 401, 404, 200]);
    for (const reply of replies) {
      expect(reply.headers.get('content-security-policy')).to.equal("default-src 'none'; frame-ancestors 'none'");
      expect(reply.headers.get('x-content-type-options')).to.equal('nosniff');
      expect(reply.headers.get('x-frame-options')).to.equal('DENY');
      expect(reply.headers.get('strict-transport-security')).to.match(/max-age=\d+/);
      expect(reply.headers.get('referrer-policy')).to.equal('no-referrer');
    }
  });

  it("API answers are never stored by the browser: Back after a logout cannot show a user's data", async () => {
    const browser = new Client(app.url);
    await browser.post('/api/signup', { email: uniqueEmail('nostore'), password: GOOD_PASSWORD, name: 'Nora' });
    const created = await browser.post('/api/platforms', { name: 'Secret platform', type: 'vcs' });
    const id = (created.json.platform as { id: number }).id;
    const replies = {
      'GET /api/platforms': await browser.get('/api/platforms'),
      'POST /api/platforms': created,
      'POST /api/platforms/:id/activate': await browser.post(`/api/platforms/${id}/activate`),
      'PATCH /api/session': await browser.patch('/api/session', { preferences: { theme: 'dark' } }),
      'POST /api/sessions/revoke-others': await browser.post('/api/sessions/revoke-others'),
      'GET /api/nowhere (404)': await browser.get('/api/nowhere'),
      // Routes match in any letter case.
      'GET /API/platforms': await browser.get('/API/platforms'),
      'GET /API/Session (401)': await new Client(app.url).get('/API/Session'),
    };
    for (const [what, reply] of Object.entries(replies)) {
      expect(reply.status, what).to.be.below(500);
      expect(reply.headers.get('cache-control'), what).to.equal('no-store');
    }
  });
});
