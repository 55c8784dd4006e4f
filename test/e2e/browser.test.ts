/**
 * The browser experience, end to end, in real headless Chromium (playwright-core driving
 * /usr/bin/chromium) against the real server process: the pages, the cross-tab sync, the
 * idle warning, and a backend flip under a logged-in page. Also writes docs/screenshots/*.png.
 *
 * Every wait is bounded (Playwright timeouts); nothing asserts on wall-clock durations.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Cookie, Page, Route } from 'playwright-core';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { startRedis, waitUntil, type RedisProcess } from '../support/redis-server.js';
import {
  addPlatform,
  BACKEND_LABELS,
  BrowserSession,
  clearRedisPrefix,
  CROSS_TAB_MS,
  login,
  logout,
  onPath,
  person,
  platformRow,
  screenshot,
  signup,
  switchPlatform,
  UA,
  UI_MS,
  waitForText,
  type Backend,
} from './browser-support.js';

const REDIS_URL = process.env.E2E_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const ADMIN_TOKEN = `e2e-admin-${randomBytes(12).toString('hex')}`;
const redisPrefix = () => `e2e-${randomBytes(6).toString('hex')}:`;


/** The forms `page` posts as navigations from now on (a script's fetch is not one). */
function postedForms(page: Page): string[] {
  const posted: string[] = [];
  page.on('request', (request) => {
    if (request.isNavigationRequest() && request.method() === 'POST') posted.push(new URL(request.url()).pathname);
  });
  return posted;
}

describe('browser (headless Chromium)', function () {
  this.timeout(60_000);
  let app: AppProcess | undefined;
  const session = new BrowserSession(() => app?.url ?? '');

  before(() => session.launch());
  afterEach(() => session.closeAll());
  after(() => session.close());

  /** Console errors (CSP violations included) seen in this test's pages. */
  function expectCleanConsole() {
    expect(session.takeProblems(), 'console errors or CSP violations').to.deep.equal([]);
  }

  async function withApp(env: Record<string, string>): Promise<AppProcess> {
    app = await startApp(env);
    return app;
  }

  async function stopApp(env?: Record<string, string>) {
    await app?.stop();
    app = undefined;
    if (env?.REDIS_KEY_PREFIX) await clearRedisPrefix(REDIS_URL, env.REDIS_KEY_PREFIX);
  }

  const noticeOn = (page: Page) => page.locator('#signed-out-notice');

  for (const backend of ['cookie', 'database', 'redis'] as const satisfies readonly Backend[]) {
    describe(`with sessions in ${backend}`, function () {
      const env: Record<string, string> =
        backend === 'redis' ? { SESSION_STORAGE: 'redis', REDIS_URL, REDIS_KEY_PREFIX: redisPrefix() } : { SESSION_STORAGE: backend };
      before(async () => {
        await withApp(env);
      });
      after(() => stopApp(env));

      it('signs up, logs out and logs in again', async () => {
        const ann = person('Ann Example', `ann-${backend}`);
        const page = await session.page();
        await signup(page, ann);
        expect(await page.title()).to.equal('Dashboard · Switchboard');
        expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('Hello, Ann');
        await waitForText(page, '[data-bind="backend"]', BACKEND_LABELS[backend], UI_MS);

        await logout(page);
        expect(await noticeOn(page).textContent()).to.equal('You have been logged out.');
        await page.goto('/');
        expect(new URL(page.url()).pathname).to.equal('/login');

        await login(page, ann);
        await waitForText(page, '[data-bind="backend"]', BACKEND_LABELS[backend], UI_MS);
        expectCleanConsole();
      });

      it('adds and switches platforms; a second tab follows within the bound', async () => {
        const bo = person('Bo Example', `bo-${backend}`);
        const context = await session.context();
        const first = await session.page(context);
        await signup(first, bo);
        expect(await first.locator('[data-bind="platform"]').textContent()).to.equal('None');

        // A field error from the API is shown next to its field.
        await first.locator('form#add-platform').getByRole('button', { name: 'Add platform' }).click();
        await waitForText(first, '#add-platform-name-error', 'Enter a name', UI_MS);
        expect(await first.locator('#add-platform-name').getAttribute('aria-invalid')).to.equal('true');

        await addPlatform(first, 'Support desk', 'Zendesk');
        expect(await first.locator('#add-platform-name').getAttribute('aria-invalid')).to.equal(null);
        await addPlatform(first, 'Engineering', 'GitHub');
        const formPosts = postedForms(first);
        await switchPlatform(first, 'Engineering');
        expect(formPosts, 'the script switched; the button did not also post its form').to.deep.equal([]);
        expect(await platformRow(first, 'Engineering').getAttribute('data-active')).to.equal('');

        const second = await session.page(context);
        await second.goto('/');
        await waitForText(second, '[data-bind="platform"]', 'Engineering', UI_MS);

        await switchPlatform(first, 'Support desk');
        await waitForText(second, '[data-bind="platform"]', 'Support desk', CROSS_TAB_MS);
        await platformRow(second, 'Support desk').and(second.locator('[data-active]')).waitFor({ timeout: CROSS_TAB_MS });

        await addPlatform(first, 'Billing', 'Stripe');
        await platformRow(second, 'Billing').waitFor({ timeout: CROSS_TAB_MS });

        await second.reload();
        await waitForText(second, '[data-bind="platform"]', 'Support desk', UI_MS);
        expect(await second.locator('#platform-list > li.platform').count()).to.equal(3);
        expectCleanConsole();
      });

      it('logging out in one tab sends the other tab of the browser to /login', async () => {
        const cy = person('Cy Example', `cy-${backend}`);
        const context = await session.context();
        const first = await session.page(context);
        await signup(first, cy);
        const second = await session.page(context);
        await second.goto('/sessions');
        expect(new URL(second.url()).pathname).to.equal('/sessions');

        await logout(first);
        await second.waitForURL(onPath('/login'), { timeout: CROSS_TAB_MS });
        expect(await noticeOn(second).textContent()).to.equal('You have been logged out.');
        expectCleanConsole();
      });

      it('the sessions page shows a login on another device, and a revoke made in another tab, without a reload', async () => {
        const eve = person('Eve Example', `eve-${backend}`);
        const context = await session.context();
        const watching = await session.page(context);
        await signup(watching, eve);
        await watching.goto('/sessions');
        await expectCount(watching.locator('#session-list > li.session'), 1);

        const device = await session.page(await session.context({ userAgent: UA.firefoxWindows }));
        await login(device, eve);
        await expectCount(watching.locator('#session-list > li.session'), 2);
        await waitForText(watching, '#session-count', '2 active sessions', UI_MS);
        expect(await watching.getByRole('button', { name: 'Log out all other sessions' }).isDisabled()).to.equal(false);

        const revoking = await session.page(context);
        await revoking.goto('/sessions');
        const formPosts = postedForms(revoking);
        await revoking.locator('li.session:not([data-current])').getByRole('button', { name: /^Revoke/ }).click();
        await waitForText(revoking, '#sessions-status', 'Session revoked. That device is logged out.', UI_MS);
        expect(formPosts, 'the script revoked; the button did not also post its form').to.deep.equal([]);
        expect(new URL(revoking.url()).search).to.equal('');
        await expectCount(watching.locator('#session-list > li.session'), 1);
        expectCleanConsole();
      });

      it('a session revoked on /sessions from another browser sends that browser to /login', async () => {
        const di = person('Di Example', `di-${backend}`);
        const victim = await session.page();
        await signup(victim, di);

        const other = await session.page(await session.context({ userAgent: UA.firefoxWindows }));
        await login(other, di);
        await other.goto('/sessions');
        await expectCount(other.locator('#session-list > li.session'), 2);
        expect(await other.locator('li.session[data-current] .badge-current').textContent()).to.equal('This device');
        expect(await other.locator('li.session[data-current] .session-title').textContent()).to.contain('Firefox on Windows');

        await other.locator('li.session:not([data-current])').getByRole('button', { name: /^Revoke/ }).click();
        await waitForText(other, '#sessions-status', 'Session revoked. That device is logged out.', UI_MS);
        await expectCount(other.locator('#session-list > li.session'), 1);

        await victim.waitForURL(onPath('/login'), { timeout: CROSS_TAB_MS });
        expect(await noticeOn(victim).textContent()).to.contain('Your session was ended');
        await victim.goto('/');
        expect(new URL(victim.url()).pathname).to.equal('/login');
        // The revoking browser is still in.
        await other.reload();
        expect(new URL(other.url()).pathname).to.equal('/sessions');
        expectCleanConsole();
      });

      it('a switch sent by one tab just as another tab changes the password is made, not taken for a logout', async () => {
        const fay = person('Fay Example', `fay-${backend}`);
        const context = await session.context();
        const here = await session.page(context);
        await signup(here, fay);
        await addPlatform(here, 'Crossing Slack', 'slack');
        const account = await session.page(context);
        await account.goto('/account');
        // The switch leaves with the cookie of the moment; it is held on its way until the other
        // tab's password change has rotated the session's id, so it arrives with the old one.
        const answers: number[] = [];
        here.on('response', (res) => {
          if (/\/api\/platforms\/\d+\/activate$/.test(new URL(res.url()).pathname)) answers.push(res.status());
        });
        // Chromium adds the cookie as the request goes on: the jar holds the old cookie for that
        // moment, and the new one again from the tab's next look at its session.
        const jar = (cookies: Cookie[]) => cookies.map((c) => `${c.name}=${c.value}`).sort().join('; ');
        let crossed = false;
        let old: Cookie[] = [];
        let renewed: Cookie[] = [];
        await here.route(/\/api\/platforms\/\d+\/activate$/, async (route) => {
          if (crossed) return route.continue();
          crossed = true;
          old = await context.cookies();
          const form = account.locator('form#password');
          await form.getByLabel('Current password').fill(fay.password);
          await form.getByLabel('New password').fill(`a crossing ${backend} passphrase`);
          await form.getByRole('button', { name: 'Change password' }).click();
          await account.locator('#password-status', { hasText: 'Your password has been changed.' }).waitFor({ timeout: UI_MS });
          renewed = await context.cookies();
          await context.addCookies(old);
          await route.continue();
        });
        await here.route(/\/api\/session/, async (route) => {
          // Unless the 401 cleared the cookie: the browser would have lost the new one with it.
          if (renewed.length > 0 && jar(await context.cookies()) === jar(old)) await context.addCookies(renewed);
          renewed = [];
          await route.continue();
        });
        await switchPlatform(here, 'Crossing Slack');
        expect(answers, 'the first switch crossed the rotation (401), and was sent again').to.deep.equal([401, 200]);
        expect(new URL(here.url()).pathname).to.equal('/');
        await here.reload();
        await waitForText(here, '[data-bind="platform"]', 'Crossing Slack', UI_MS);
        expectCleanConsole();
      });

      it('a form sent just as this browser logs in as someone else is not sent again as them: the page starts over as that user', async () => {
        const gil = person('Gil Example', `gil-${backend}`);
        const hal = person('Hal Example', `hal-${backend}`);
        await signup(await session.page(await session.context()), hal);
        const context = await session.context();
        const here = await session.page(context);
        await signup(here, gil);
        const posts: number[] = [];
        here.on('response', (res) => {
          if (new URL(res.url()).pathname === '/api/platforms' && res.request().method() === 'POST') posts.push(res.status());
        });
        let crossed = false;
        await here.route(/\/api\/platforms$/, async (route) => {
          if (route.request().method() !== 'POST' || crossed) return route.continue();
          crossed = true;
          // Hal logs in on this browser (another tab, a shared computer) while Gil's call is on
          // its way; it arrives with a cookie that no longer opens Gil's session: 401.
          expect((await context.request.post('/api/login', { data: { email: hal.email, password: hal.password } })).status()).to.equal(200);
          await route.fulfill({ status: 401, contentType: 'application/json', body: JSON.stringify({ error: { code: 'unauthenticated', message: 'Log in to continue' } }) });
        });
        const form = here.locator('form#add-platform');
        await form.getByLabel('Name').fill('Gil Slack');
        await form.getByLabel('Type').fill('slack');
        await form.getByRole('button', { name: 'Add platform' }).click();
        await here.getByRole('heading', { level: 1, name: 'Hello, Hal' }).waitFor({ timeout: UI_MS });
        // Told that the press did nothing, rather than left to think Hal's account has it.
        await here.locator('#page-notice', { hasText: 'so what you just did was not done' }).waitFor({ timeout: UI_MS });
        // Where the person is looking (the reload would keep the scroll position) and read out: focused.
        expect(await here.evaluate(() => document.activeElement?.id)).to.equal('page-notice');
        expect(posts, 'sent once, not again as Hal').to.deep.equal([401]);
        await here.reload();
        expect(await here.locator('#page-notice').isVisible(), 'said once, not on every later load').to.equal(false);
        const platforms = (await (await context.request.get('/api/platforms')).json()) as { platforms: Array<{ name: string }> };
        expect(platforms.platforms.map((p) => p.name)).not.to.include('Gil Slack');
      });

      it('changing the password on /account keeps this browser signed in and logs out the others', async () => {
        const ed = person('Ed Example', `ed-${backend}`);
        const newPassword = `a brand new ${backend} passphrase`;
        const context = await session.context();
        const here = await session.page(context);
        await signup(here, ed);
        const hereOtherTab = await session.page(context);
        await hereOtherTab.goto('/');
        const elsewhere = await session.page(await session.context({ userAgent: UA.safariIphone }));
        await login(elsewhere, ed);

        await here.goto('/account');
        const form = here.locator('form#password');
        await form.getByLabel('Current password').fill('not my password');
        await form.getByLabel('New password').fill(newPassword);
        await form.getByRole('button', { name: 'Change password' }).click();
        await waitForText(here, '#password-currentPassword-error', 'Your current password is not correct.', UI_MS);
        expect(await form.getByLabel('Current password').getAttribute('aria-invalid')).to.equal('true');

        await form.getByLabel('Current password').fill(ed.password);
        await form.getByLabel('New password').fill('password');
        await form.getByRole('button', { name: 'Change password' }).click();
        await waitForText(here, '#password-newPassword-error', 'This password is too common; choose another', UI_MS);
        expect(await form.getByLabel('Current password').getAttribute('aria-invalid')).to.equal(null);

        await form.getByLabel('New password').fill(newPassword);
        await form.getByRole('button', { name: 'Change password' }).click();
        await here.locator('#password-status', { hasText: 'Your password has been changed.' }).waitFor({ timeout: UI_MS });

        await elsewhere.waitForURL(onPath('/login'), { timeout: CROSS_TAB_MS });
        await here.reload();
        expect(new URL(here.url()).pathname).to.equal('/account');
        await hereOtherTab.reload();
        expect(new URL(hereOtherTab.url()).pathname).to.equal('/');

        // The old password no longer works; the new one does.
        await elsewhere.getByLabel('Email').fill(ed.email);
        await elsewhere.getByLabel('Password').fill(ed.password);
        await elsewhere.getByRole('button', { name: 'Log in' }).click();
        await waitForText(elsewhere, '#login-error', 'Email or password is incorrect', UI_MS);
        await login(elsewhere, ed, newPassword);
        expectCleanConsole();
      });

      it('two tabs logging in one just after the other end as the second, and leave no session live that no tab holds', async () => {
        const people = [person('Jan Example', `jan-${backend}`), person('Kim Example', `kim-${backend}`)] as const;
        for (const who of people) {
          const maker = new Client(app!.url);
          await maker.signup(who);
          expect((await maker.post('/api/logout')).status).to.equal(204);
        }
        const context = await session.context();
        const [first, second] = [await session.page(context), await session.page(context)];
        for (const [page, who] of [[first, people[0]], [second, people[1]]] as const) {
          await page.goto('/login');
          await page.getByLabel('Email').fill(who.email);
          await page.getByLabel('Password').fill(who.password);
        }
        // The first login is held on its way until the second tab's is waiting for its turn (or,
        // in a browser without Web Locks, has gone out too).
        let releaseFirst!: () => void;
        const firstReleased = new Promise<void>((resolve) => (releaseFirst = resolve));
        await first.route(/\/api\/login$/, async (route) => {
          await firstReleased;
          await route.continue();
        });
        let secondSent!: () => void;
        const secondOut = new Promise<void>((resolve) => (secondSent = resolve));
        second.on('request', (r) => {
          if (new URL(r.url()).pathname === '/api/login') secondSent();
        });
        await first.getByRole('button', { name: 'Log in' }).click();
        await second.getByRole('button', { name: 'Log in' }).click();
        const waitingItsTurn = second.waitForFunction(async () => ((await navigator.locks.query()).pending ?? []).some((l) => l.name === 'switchboard-session-change'), undefined, { timeout: UI_MS });
        await Promise.race([secondOut, waitingItsTurn]);
        releaseFirst();
        // Kim's login, the later one, is what this browser holds; both tabs follow it.
        for (const page of [first, second]) await page.getByRole('heading', { level: 1, name: 'Hello, Kim' }).waitFor({ timeout: UI_MS });
        const live = async (who: (typeof people)[number]) => {
          const checker = new Client(app!.url, UA.safariIphone);
          expect((await checker.login(who.email, who.password)).status).to.equal(200);
          const listed = (await checker.get('/api/sessions')).json as { sessions: Array<{ current: boolean }> };
          return listed.sessions.filter((s) => !s.current).length;
        };
        expect([await live(people[0]), await live(people[1])], "sessions live besides the checkers': Jan's, Kim's").to.deep.equal([0, 1]);
      });

      it('a logout in one tab crossing a password change in another leaves no session live that no tab holds', async () => {
        const ida = person('Ida Example', `ida-${backend}`);
        const newPassword = `ida's new ${backend} passphrase`;
        const context = await session.context();
        const dashboard = await session.page(context);
        await signup(dashboard, ida);
        const account = await session.page(context);
        await account.goto('/account');

        // The password change reaches the server (the session's id rotates) and its answer is
        // held; the logout, if it goes out meanwhile, leaves with the old cookie, and its answer
        // (which clears the cookie) is let through only after the password change's.
        let releasePassword!: () => void;
        const passwordReleased = new Promise<void>((resolve) => (releasePassword = resolve));
        let passwordAnswered!: () => void;
        const passwordDone = new Promise<void>((resolve) => (passwordAnswered = resolve));
        let passwordChanged!: () => void;
        const passwordAtServer = new Promise<void>((resolve) => (passwordChanged = resolve));
        await account.route(/\/api\/password$/, async (route) => {
          const response = await sendAsTheBrowserDid(route);
          passwordChanged();
          await passwordReleased;
          await route.fulfill(response);
          passwordAnswered();
        });
        let logoutSent!: () => void;
        const logoutOut = new Promise<void>((resolve) => (logoutSent = resolve));
        await dashboard.route(/\/api\/logout$/, async (route) => {
          logoutSent();
          const response = await sendAsTheBrowserDid(route);
          await passwordDone;
          await route.fulfill(response);
        });

        const form = account.locator('form#password');
        await form.getByLabel('Current password').fill(ida.password);
        await form.getByLabel('New password').fill(newPassword);
        await form.getByRole('button', { name: 'Change password' }).click();
        await passwordAtServer;
        await dashboard.locator('form.logout-form').getByRole('button', { name: 'Log out' }).click();
        // Either the logout went out at once (and crosses the change), or it waits its turn.
        const waitingItsTurn = dashboard.waitForFunction(async () => ((await navigator.locks.query()).pending ?? []).some((l) => l.name === 'switchboard-session-change'), undefined, { timeout: UI_MS });
        await Promise.race([logoutOut, waitingItsTurn]);
        releasePassword();
        await dashboard.waitForURL(onPath('/login'), { timeout: UI_MS });

        // Every session of Ida's still live is one this browser holds.
        const held = (await context.request.get('/api/session')).status() === 200 ? 1 : 0;
        const checker = new Client(app!.url, UA.safariIphone);
        expect((await checker.login(ida.email, newPassword)).status).to.equal(200);
        const listed = (await checker.get('/api/sessions')).json as { sessions: Array<{ current: boolean }> };
        expect(listed.sessions.filter((s) => !s.current).length, 'sessions live besides the checker').to.equal(held);
        expect(held, 'the logout logged this browser out').to.equal(0);
      });
    });
  }

  describe('a logout the server cannot carry out', function () {
    let redis: RedisProcess;
    before(async () => {
      redis = await startRedis();
      // No fallback: while this Redis is down, the logout answers 503.
      await withApp({ SESSION_STORAGE: 'redis', SESSION_FALLBACK: 'none', REDIS_URL: redis.url });
    });
    after(async () => {
      await stopApp();
      await redis?.stop();
    });
    // The 503s of the outage are expected console errors here; no later test may see them.
    afterEach(() => session.takeProblems());

    it('says so and keeps every tab where it is; once the server can, the logout goes through', async () => {
      const gus = person('Gus Example', 'gus-outage');
      const context = await session.context();
      const first = await session.page(context);
      await signup(first, gus);
      const second = await session.page(context);
      await second.goto('/sessions');

      await redis.stop();
      await first.getByRole('button', { name: 'Log out', exact: true }).first().click();
      await first.locator('#logout-error', { hasText: /^Could not log out: / }).waitFor({ timeout: UI_MS });
      // The other tab was not told to leave: its next checks fail (503) without sending it away.
      await second.waitForTimeout(CROSS_TAB_MS);
      expect(new URL(first.url()).pathname, 'this tab stays').to.equal('/');
      expect(new URL(second.url()).pathname, 'the other tab stays').to.equal('/sessions');

      await redis.restart();
      // Once the app has its Redis back (reconnected, breaker closed), the session is read
      // through from its database copy (the restarted Redis is empty), and the retry logs it out.
      await waitUntil('the app serves from Redis again', async () => {
        const ready = await fetch(`${app!.url}/readyz`);
        return ready.ok && ((await ready.json()) as { backends: { redis: string } }).backends.redis === 'up';
      }, 400);
      await logout(first);
      await second.waitForURL(onPath('/login'), { timeout: CROSS_TAB_MS });
    });
  });

  describe('a server that does not answer in time', function () {
    before(() => withApp({ SESSION_STORAGE: 'database' }));
    after(() => stopApp());
    afterEach(() => session.takeProblems());

    it('a password change the page gives up on says it may have been done, not that the server could not be reached', async () => {
      const ned = person('Ned Example', 'ned-slow');
      const context = await session.context();
      const page = await session.page(context);
      await signup(page, ned);
      await page.goto('/account');
      // The change is held before it reaches the server, until the page has given up on it.
      const held: Route[] = [];
      await page.route(/\/api\/password$/, (route) => {
        held.push(route);
      });
      const form = page.locator('form#password');
      await form.getByLabel('Current password').fill(ned.password);
      await form.getByLabel('New password').fill('ned has a new long passphrase');
      await form.getByRole('button', { name: 'Change password' }).click();
      // The page's own limit (app.js REQUEST_TIMEOUT_MS, 15 s), then the usual bound.
      const error = page.locator('#password-error');
      await error.filter({ hasText: /did not answer in time/ }).waitFor({ timeout: 15_000 + UI_MS });
      expect(await error.textContent()).to.match(/may have been done all the same: reload the page to see/);
      expect(await error.textContent()).not.to.match(/could not be reached/);
      expect(await form.getByRole('button', { name: 'Change password' }).getAttribute('aria-disabled'), 'the form can be sent again').to.equal(null);
      for (const route of held) await route.abort().catch(() => undefined);
    });
  });

  describe('the backend flag flipped under a logged-in page', function () {
    const env = { SESSION_STORAGE: 'database', ADMIN_TOKEN, REDIS_URL, REDIS_KEY_PREFIX: redisPrefix() };
    before(async () => {
      await withApp(env);
    });
    after(() => stopApp(env));

    async function flip(backend: Backend) {
      const res = await fetch(`${app!.url}/api/admin/flags/session-storage`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ backend }),
      });
      expect(res.status, await res.text()).to.equal(200);
    }

    async function adminSessions(userId: string) {
      const res = await fetch(`${app!.url}/api/admin/users/${userId}/sessions`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status).to.equal(200);
      return ((await res.json()) as { sessions: Array<{ backend: string }> }).sessions;
    }

    it('keeps the user logged in through redis → cookie → database, and shows the new backend', async () => {
      const fay = person('Fay Example', 'fay-flip');
      const page = await session.page();
      await signup(page, fay);
      await waitForText(page, '[data-bind="backend"]', 'Database', UI_MS);
      await addPlatform(page, 'Alpha', 'Slack');
      await addPlatform(page, 'Beta', 'Linear');
      const userId = (await page.locator('body').getAttribute('data-user-id')) ?? '';

      const steps: Array<[Backend, string]> = [
        ['redis', 'Alpha'],
        ['cookie', 'Beta'],
        ['database', 'Alpha'],
      ];
      for (const [backend, platform] of steps) {
        await flip(backend);
        await switchPlatform(page, platform);
        // The request that finds the session in the old backend moves it; the next check shows where it is now.
        await waitForText(page, '[data-bind="backend"]', BACKEND_LABELS[backend], UI_MS);
        await page.reload();
        expect(new URL(page.url()).pathname, `after the flip to ${backend}`).to.equal('/');
        await waitForText(page, '[data-bind="platform"]', platform, UI_MS);
        await waitForText(page, '[data-bind="backend"]', BACKEND_LABELS[backend], UI_MS);
        expect((await adminSessions(userId)).map((s) => s.backend)).to.deep.equal([backend]);
      }
      await page.goto('/sessions');
      expect(new URL(page.url()).pathname).to.equal('/sessions');
      expect(await page.locator('li.session[data-current] .badge-backend').textContent()).to.equal('Database');
      expectCleanConsole();
    });
  });

  describe('pages, headers, accessibility and screenshots', function () {
    const env = { SESSION_STORAGE: 'database' };
    before(async () => {
      await withApp(env);
    });
    after(() => stopApp(env));

    it('redirects anonymous visitors of /, /sessions and /account to /login, never cached', async () => {
      for (const path of ['/', '/sessions', '/account']) {
        const res = await fetch(app!.url + path, { redirect: 'manual' });
        expect(res.status, path).to.equal(302);
        expect(res.headers.get('location'), path).to.equal('/login');
        expect(res.headers.get('cache-control'), path).to.equal('no-store');
      }
      const page = await session.page();
      await page.goto('/account');
      expect(new URL(page.url()).pathname).to.equal('/login');
      expectCleanConsole();
    });

    it('serves every page with a strict CSP (no unsafe-inline), no-store, a language and a title', async () => {
      const gi = person('Gi Example', 'gi-pages');
      const page = await session.page();
      const seen: string[] = [];
      page.on('response', (res) => {
        if (res.request().resourceType() === 'document') seen.push(new URL(res.url()).pathname);
      });
      for (const path of ['/login', '/signup']) {
        const res = await page.goto(path);
        await expectPageBasics(page, res?.headers() ?? {}, path);
      }
      await signup(page, gi);
      for (const path of ['/', '/sessions', '/account']) {
        const res = await page.goto(path);
        expect(new URL(page.url()).pathname).to.equal(path);
        await expectPageBasics(page, res?.headers() ?? {}, path);
      }
      // Signed in, /login and /signup lead to the dashboard.
      for (const path of ['/login', '/signup']) {
        await page.goto(path);
        expect(new URL(page.url()).pathname, path).to.equal('/');
      }
      const css = await fetch(`${app!.url}/assets/app.css`);
      expect(css.headers.get('content-type')).to.equal('text/css; charset=utf-8');
      expect(css.headers.get('cache-control')).to.match(/max-age=\d+/);
      const js = await fetch(`${app!.url}/assets/app.js`);
      expect(js.headers.get('content-type')).to.equal('text/javascript; charset=utf-8');
      expect(seen.length).to.be.greaterThan(0);
      expectCleanConsole();
    });

    it('shows a page, not JSON, for an address no page has; the API keeps its JSON', async () => {
      const page = await session.page();
      const res = await page.goto('/no-such-page');
      expect(res?.status()).to.equal(404);
      await expectPageBasics(page, res?.headers() ?? {}, '/no-such-page');
      expect(await page.locator('h1').textContent()).to.equal('Page not found');
      await page.getByRole('link', { name: 'Go to your dashboard' }).click();
      await page.waitForURL(onPath('/login'), { timeout: UI_MS });
      const api = await page.goto('/api/no-such-route');
      expect([api?.status(), api?.headers()['content-type']]).to.deep.equal([404, 'application/json; charset=utf-8']);
      // Chromium logs the 404 of the page itself; nothing else (no CSP violation on that page).
      const unexpected = session.takeProblems().filter((p) => !/\/no-such-page: Failed to load resource: the server responded with a status of 404/.test(p));
      expect(unexpected, 'console errors or CSP violations').to.deep.equal([]);
    });

    it('shows API field errors next to their fields on /signup and /login, and works from the keyboard', async () => {
      const hu = person('Hu Example', 'hu-forms');
      const page = await session.page();
      await page.goto('/signup');
      await page.getByRole('button', { name: 'Create account' }).click();
      await waitForText(page, '#signup-name-error', 'Enter a name', UI_MS);
      expect(await page.locator('#signup-email-error').textContent()).to.equal('Enter a valid email address');
      expect(await page.getByLabel('Name').getAttribute('aria-invalid')).to.equal('true');
      // The first invalid field has the focus, and points at its error.
      expect(await page.evaluate(() => document.activeElement?.id)).to.equal('signup-name');
      expect(await page.getByLabel('Name').getAttribute('aria-describedby')).to.contain('signup-name-error');

      await page.getByLabel('Name').fill(hu.name);
      await page.getByLabel('Email').fill(hu.email);
      await page.getByLabel('Password', { exact: true }).fill('short');
      await page.getByRole('button', { name: 'Create account' }).click();
      await waitForText(page, '#signup-password-error', 'Use at least 8 characters', UI_MS);
      expect(await page.locator('#signup-name-error').textContent()).to.equal('');
      await page.getByLabel('Password', { exact: true }).fill(hu.password);
      await page.getByRole('button', { name: 'Create account' }).click();
      await page.waitForURL(onPath('/'), { timeout: UI_MS });
      await logout(page);

      await page.goto('/signup');
      await page.getByLabel('Name').fill(hu.name);
      await page.getByLabel('Email').fill(hu.email);
      await page.getByLabel('Password', { exact: true }).fill(hu.password);
      await page.getByRole('button', { name: 'Create account' }).click();
      await waitForText(page, '#signup-email-error', 'An account with this email already exists', UI_MS);

      await page.goto('/login');
      await page.getByLabel('Email').fill(hu.email);
      await page.getByLabel('Password').fill('wrong password');
      await page.getByRole('button', { name: 'Log in' }).click();
      await waitForText(page, '#login-error', 'Email or password is incorrect', UI_MS);
      expect(await page.locator('#login-error').getAttribute('role')).to.equal('alert');
      // The password is focused and selected: typing it again replaces the wrong one.
      expect(await page.evaluate(() => document.activeElement?.id)).to.equal('login-password');
      await page.keyboard.type(hu.password);
      expect(await page.getByLabel('Password').inputValue()).to.equal(hu.password);

      // Keyboard only: skip link first, then the form; Enter submits.
      await page.goto('/login');
      await page.keyboard.press('Tab');
      expect(await page.evaluate(() => document.activeElement?.textContent)).to.equal('Skip to content');
      await page.keyboard.press('Tab');
      await page.keyboard.press('Tab');
      expect(await page.evaluate(() => document.activeElement?.id)).to.equal('login-email');
      await page.keyboard.type(hu.email);
      await page.keyboard.press('Tab');
      await page.keyboard.type(hu.password);
      await page.keyboard.press('Enter');
      await page.waitForURL(onPath('/'), { timeout: UI_MS });
      expectCleanConsole();
    });

    it('works without JavaScript: each form answers with a page, its errors said on the form’s page', async () => {
      const noScript = await session.page(await session.context({ javaScriptEnabled: false }));
      const jo = person('Jo Noscript', 'jo-noscript');
      const submit = async (button: string, path: string) => {
        await noScript.getByRole('button', { name: button }).click();
        await noScript.waitForURL(onPath(path), { timeout: UI_MS });
      };
      await noScript.goto('/signup');
      await noScript.getByLabel('Name').fill(jo.name);
      await noScript.getByLabel('Email').fill(jo.email);
      await noScript.getByLabel('Password', { exact: true }).fill('short');
      await submit('Create account', '/signup');
      // Refused: the field's own sentence, what was typed (never the password), and the focus there.
      expect(await noScript.locator('#signup-password-error').textContent()).to.match(/at least \d+ characters/i);
      expect(await noScript.getByLabel('Password', { exact: true }).getAttribute('aria-invalid')).to.equal('true');
      expect(await noScript.evaluate(() => document.activeElement?.id)).to.equal('signup-password');
      expect([await noScript.getByLabel('Name').inputValue(), await noScript.getByLabel('Email').inputValue(), await noScript.getByLabel('Password', { exact: true }).inputValue()]).to.deep.equal([jo.name, jo.email, '']);
      await noScript.reload();
      expect(await noScript.locator('#signup-password-error').textContent(), 'shown once: a reload shows a clean form').to.equal('');
      await noScript.getByLabel('Name').fill(jo.name);
      await noScript.getByLabel('Email').fill(jo.email);
      await noScript.getByLabel('Password', { exact: true }).fill(jo.password);
      await submit('Create account', '/');
      expect(await noScript.locator('h1').textContent()).to.equal('Hello, Jo');
      // The same address again, by someone else (another password): said on the email field, which keeps it and has the focus.
      const again = await session.page(await session.context({ javaScriptEnabled: false }));
      await again.goto('/signup');
      await again.getByLabel('Name').fill('Jo Again');
      await again.getByLabel('Email').fill(jo.email);
      await again.getByLabel('Password', { exact: true }).fill('someone else entirely 77');
      await again.getByRole('button', { name: 'Create account' }).click();
      await again.waitForURL(onPath('/signup'), { timeout: UI_MS });
      expect(await again.getByLabel('Email').getAttribute('aria-invalid')).to.equal('true');
      expect(await again.locator('#signup-email-error').textContent()).to.match(/already/i);
      expect(await again.locator('#signup-error').textContent(), 'said once').to.equal('');
      expect(await again.evaluate(() => document.activeElement?.id)).to.equal('signup-email');
      expect(await again.getByLabel('Email').inputValue()).to.equal(jo.email);

      await noScript.getByLabel('Name').fill('Scriptless');
      await noScript.getByLabel('Type').fill('GitHub');
      await submit('Add platform', '/');
      expect(await noScript.locator('#platform-list').textContent()).to.contain('Scriptless');

      await noScript.goto('/account');
      await noScript.getByLabel('Current password').fill('not my password');
      await noScript.getByLabel('New password').fill('a new passphrase for jo 42');
      await submit('Change password', '/account');
      // On its field, as with JavaScript: marked invalid, said under it (only there), and focused.
      expect(await noScript.locator('#password-error').textContent()).to.equal('');
      expect(await noScript.getByLabel('Current password').getAttribute('aria-invalid')).to.equal('true');
      expect(await noScript.locator('#password-currentPassword-error').textContent()).to.equal('Your current password is not correct.');
      expect(await noScript.evaluate(() => document.activeElement?.id)).to.equal('password-currentPassword');
      await noScript.getByLabel('Current password').fill(jo.password);
      await noScript.getByLabel('New password').fill('a new passphrase for jo 42');
      await submit('Change password', '/account');
      expect(await noScript.locator('#password-status').textContent()).to.contain('Password changed');

      await submit('Log out', '/login');
      expect(await noScript.locator('#signed-out-notice').textContent()).to.equal('You have been logged out.');
      await noScript.getByLabel('Email').fill(jo.email);
      await noScript.getByLabel('Password').fill(jo.password);
      await submit('Log in', '/login');
      expect(await noScript.locator('#login-error').textContent(), 'the old password no longer works').to.equal('Email or password is incorrect.');
      expect(await noScript.locator('#signed-out-notice').textContent()).to.equal('');
      expect(await noScript.getByLabel('Email').inputValue(), 'the email is kept').to.equal(jo.email);
      await noScript.getByLabel('Password').fill('a new passphrase for jo 42');
      await submit('Log in', '/');
      expect(await noScript.locator('h1').textContent()).to.equal('Hello, Jo');

      await submit('Switch to Scriptless', '/');
      expect(await noScript.locator('[data-bind="platform"]').first().textContent()).to.equal('Scriptless');
      // Two more devices, then revoke one and every other from the sessions page.
      const newPassword = 'a new passphrase for jo 42';
      for (const userAgent of [UA.firefoxWindows, UA.safariIphone]) await login(await session.page(await session.context({ userAgent })), jo, newPassword);
      await noScript.goto('/sessions');
      await expectCount(noScript.locator('#session-list > li.session'), 3);
      await noScript.getByRole('button', { name: /^Revoke Firefox/ }).click();
      await noScript.waitForURL((url) => url.pathname === '/sessions' && url.search === '?revoked=one', { timeout: UI_MS });
      expect(await noScript.locator('#sessions-status').textContent()).to.equal('Session revoked. That device is logged out.');
      await expectCount(noScript.locator('#session-list > li.session'), 2);
      await noScript.getByRole('button', { name: 'Log out all other sessions' }).click();
      await noScript.waitForURL((url) => url.search === '?revoked=others', { timeout: UI_MS });
      expect(await noScript.locator('#sessions-status').textContent()).to.equal('Logged out every other session.');
      await expectCount(noScript.locator('#session-list > li.session'), 1);
      // An error code made up in the address is not shown as it is.
      await noScript.goto('/account?error=%3Cb%3Eyou%20have%20been%20hacked%3C%2Fb%3E');
      expect(await noScript.locator('#password-error').textContent()).to.equal('That did not work. Try again.');
    });

    it('writes screenshots of every page to docs/screenshots', async () => {
      const ada = person('Ada Lovelace', 'ada');
      const anon = await session.page();
      await anon.goto('/login');
      await screenshot(anon, 'login');
      await anon.goto('/signup');
      await screenshot(anon, 'signup');

      const page = await session.page();
      await signup(page, ada);
      await addPlatform(page, 'Support desk', 'Zendesk');
      await addPlatform(page, 'Engineering', 'GitHub');
      await addPlatform(page, 'Incidents', 'Slack');
      await switchPlatform(page, 'Engineering');
      await screenshot(page, 'dashboard');

      for (const userAgent of [UA.firefoxWindows, UA.safariIphone]) await login(await session.page(await session.context({ userAgent })), ada);
      await page.goto('/sessions');
      await expectCount(page.locator('#session-list > li.session'), 3);
      await screenshot(page, 'sessions');
      await page.goto('/account');
      await screenshot(page, 'account');

      const phone = await session.page(await session.context({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, userAgent: UA.safariIphone }));
      await login(phone, ada);
      // The active platform belongs to the session: this new login starts without one.
      await switchPlatform(phone, 'Engineering');
      await screenshot(phone, 'dashboard-phone');
      // No horizontal scrolling at phone width.
      expect(await phone.evaluate(() => document.documentElement.scrollWidth)).to.be.at.most(390);
      await phone.goto('/sessions');
      expect(await phone.evaluate(() => document.documentElement.scrollWidth)).to.be.at.most(390);
      expectCleanConsole();
    });

    it('fits 320 px (WCAG reflow: 1280 px at 400 %) with a long platform name: nothing scrolls sideways, every link of the navigation shows', async () => {
      const narrow = await session.page(await session.context({ viewport: { width: 320, height: 640 }, isMobile: true, hasTouch: true, userAgent: UA.safariIphone }));
      // A long name without spaces too: the dashboard's heading greets the user by it.
      await signup(narrow, person('W'.repeat(90), 'reflow'));
      const longName = 'engineering_platform_team_workspace';
      await addPlatform(narrow, longName, 'GitHub');
      await switchPlatform(narrow, longName);
      expect(await narrow.locator('.platform-name', { hasText: longName }).getAttribute('title'), 'a name cut short shows whole on hover').to.equal(longName);
      for (const path of ['/', '/sessions', '/account']) {
        await narrow.goto(path);
        expect(await narrow.evaluate(() => document.documentElement.scrollWidth), path).to.be.at.most(320);
        const hidden = await narrow.evaluate(() => {
          const nav = document.querySelector('.nav');
          return nav ? nav.scrollWidth - nav.clientWidth : -1;
        });
        expect(hidden, `${path}: the navigation is cut off by this many pixels`).to.equal(0);
      }
      expectCleanConsole();
    });
  });

  describe('the idle-expiry warning', function () {
    // A one-minute idle timeout (touch interval 30 s by default then). The tab's background
    // checks are passive, so only the page loads right after signup count as activity.
    const env = { SESSION_STORAGE: 'database', SESSION_IDLE_TIMEOUT: '60' };
    before(async () => {
      await withApp(env);
    });
    after(() => stopApp(env));

    it('warns before expiresAt, then sends the expired tab to /login', async function () {
      this.timeout(120_000);
      const ivy = person('Ivy Example', 'ivy-idle');
      const page = await session.page();
      await signup(page, ivy);
      const warning = page.locator('#idle-warning');
      expect(await warning.isVisible()).to.equal(false);
      // Shown half the idle timeout (30 s) before expiry.
      await warning.waitFor({ state: 'visible', timeout: 45_000 });
      expect(await page.locator('#idle-countdown').textContent()).to.match(/^0:[0-3]\d$/);
      expect(await warning.getByRole('button', { name: 'Stay signed in' }).isVisible()).to.equal(true);
      await screenshot(page, 'idle-warning');

      await page.waitForURL(onPath('/login'), { timeout: 45_000 });
      expect(await noticeOn(page).textContent()).to.contain('Your session expired');
      expectCleanConsole();
    });

    it('"Stay signed in" extends the session and hides the warning', async function () {
      this.timeout(120_000);
      const jo = person('Jo Example', 'jo-idle');
      const page = await session.page();
      await signup(page, jo);
      const warning = page.locator('#idle-warning');
      await warning.waitFor({ state: 'visible', timeout: 45_000 });
      const before = await page.evaluate(async () => ((await (await fetch('/api/session')).json()) as { session: { expiresAt: string } }).session.expiresAt);
      const patched = page.waitForResponse((r) => r.url().endsWith('/api/session') && r.request().method() === 'PATCH', { timeout: UI_MS });
      await warning.getByRole('button', { name: 'Stay signed in' }).click();
      expect((await patched).status()).to.equal(200);
      await warning.waitFor({ state: 'hidden', timeout: UI_MS });
      const after = await page.evaluate(async () => ((await (await fetch('/api/session')).json()) as { session: { expiresAt: string } }).session.expiresAt);
      expect(Date.parse(after)).to.be.greaterThan(Date.parse(before));
      expectCleanConsole();
    });

    it('"Stay signed in" pressed after the session was ended elsewhere says it was ended, not that it expired', async function () {
      this.timeout(120_000);
      const lee = person('Lee Example', 'lee-idle');
      const page = await session.page();
      await signup(page, lee);
      const warning = page.locator('#idle-warning');
      await warning.waitFor({ state: 'visible', timeout: 45_000 });
      // The tab's once-a-second check would find the session gone by itself, and say "ended"
      // without the button: its requests fail as if offline, so that the button is what finds it.
      const passiveCheck = (url: URL) => url.pathname === '/api/session' && url.searchParams.get('passive') === '1';
      await page.route(passiveCheck, (route) => route.abort());
      await page.waitForEvent('requestfailed', { predicate: (r) => passiveCheck(new URL(r.url())), timeout: UI_MS });
      const other = new Client(app!.url, UA.firefoxWindows);
      expect((await other.login(lee.email, lee.password)).status).to.equal(200);
      expect((await other.post('/api/sessions/revoke-others')).status).to.equal(200);
      await warning.getByRole('button', { name: 'Stay signed in' }).click();
      await page.waitForURL(onPath('/login'), { timeout: UI_MS });
      expect(await noticeOn(page).textContent()).to.contain('Your session was ended');
      // The background checks failed on purpose ("Failed to load resource"): nothing else may have.
      expect(session.takeProblems().filter((p) => !p.includes('net::ERR_FAILED'))).to.deep.equal([]);
    });
  });

  describe('a session at its absolute cap', function () {
    const env = { SESSION_STORAGE: 'cookie', SESSION_IDLE_TIMEOUT: '20', SESSION_ABSOLUTE_TIMEOUT: '45', SESSION_TOUCH_INTERVAL: '5' };
    before(async () => {
      await withApp(env);
    });
    after(() => stopApp(env));

    it('tells a user who kept it alive that it reached its maximum length, not that they were idle', async function () {
      this.timeout(120_000);
      const page = await session.page();
      await signup(page, person('Max Example', 'max-cap'));
      const warning = page.locator('#idle-warning');
      const reason = page.locator('#idle-warning-reason');
      // Active all along, moving between pages (each load touches the session), until the
      // warning shows: a page loaded near the cap must know it is the cap, not idleness.
      let warned = false;
      for (let load = 0; load < 30 && !warned; load++) {
        await page.goto(load % 2 ? '/sessions' : '/');
        warned = await warning.waitFor({ state: 'visible', timeout: 4_000 }).then(
          () => true,
          () => false,
        );
      }
      expect(warned, 'the warning showed').to.equal(true);
      expect(await reason.textContent()).to.contain('maximum length');
      await page.waitForURL(onPath('/login'), { timeout: 30_000 });
      expect(await noticeOn(page).textContent()).to.contain('reached its maximum length');
      expectCleanConsole();
    });
  });
});

/**
 * Sends a request the page made to the server as the browser sent it (its cookie as it was then),
 * and returns the answer for `route.fulfill`, so that the browser takes its Set-Cookie only when
 * the test lets the answer through. (`route.fetch()` would store the answer's cookies in the
 * browser at once.)
 */
async function sendAsTheBrowserDid(route: Route) {
  const request = route.request();
  const headers = Object.fromEntries(Object.entries(await request.allHeaders()).filter(([name]) => !['host', 'connection', 'content-length'].includes(name)));
  const res = await fetch(request.url(), { method: request.method(), headers, body: request.postData() ?? undefined, redirect: 'manual' });
  const answerHeaders: Record<string, string> = Object.fromEntries([...res.headers].filter(([name]) => name !== 'set-cookie'));
  const cookies = res.headers.getSetCookie();
  if (cookies.length) answerHeaders['set-cookie'] = cookies.join('\n');
  return { status: res.status, headers: answerHeaders, body: Buffer.from(await res.arrayBuffer()) };
}

async function expectPageBasics(page: Page, headers: Record<string, string>, path: string) {
  const csp = headers['content-security-policy'] ?? '';
  expect(csp, path).to.contain("script-src 'self'");
  expect(csp, path).to.contain("style-src 'self'");
  expect(csp, path).not.to.contain('unsafe-inline');
  expect(headers['cache-control'], path).to.equal('no-store');
  expect(headers['content-type'], path).to.equal('text/html; charset=utf-8');
  expect(await page.locator('html').getAttribute('lang'), path).to.equal('en');
  expect(await page.title(), path).to.match(/^\S.* · Switchboard$/);
  expect(await page.locator('h1').count(), path).to.equal(1);
  // Every visible input has an accessible name.
  const unnamed = await page.locator('input:not([type=hidden]):not([hidden])').evaluateAll((inputs) =>
    inputs.filter((i) => !(i as HTMLInputElement).labels?.length && !i.getAttribute('aria-label')).map((i) => i.id || i.getAttribute('name')),
  );
  expect(unnamed, path).to.deep.equal([]);
}

async function expectCount(locator: ReturnType<Page['locator']>, n: number) {
  // Bounded: the list is rendered by the server, or updated by the page after a request (up or down).
  await locator.nth(n - 1).waitFor({ timeout: UI_MS });
  await locator.nth(n).waitFor({ state: 'detached', timeout: UI_MS });
  expect(await locator.count()).to.equal(n);
}
