/**
 * PLATFORMS_MAX_PER_USER: a user's platforms are limited, which bounds GET /api/platforms and
 * the dashboard (they list them all). Before, one user created 20,000 (each 201): the list was
 * 2.9 MB, the dashboard 15.8 MB, and a few dashboards at once stalled everybody. One past the
 * limit is `400 invalid_input` naming it, also when one user's creates race, on SQLite and on
 * PostgreSQL; a form posted without JavaScript shows the same sentence on the dashboard.
 */
import { expect } from 'chai';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { createTestDatabase, ensureServices, withPostgres, type TestDatabase } from '../support/postgres.js';
import { expectError } from './helpers.js';

const LIMIT = 5;
const MESSAGE = `You have reached the limit of ${LIMIT} platforms per account`;

/** What Chromium sends with a form it submits itself (form-navigation.test.ts): the token in `_csrf` only. */
const FORM_POST = { 'Content-Type': 'application/x-www-form-urlencoded', 'Sec-Fetch-Dest': 'document', 'Sec-Fetch-Mode': 'navigate', 'Sec-Fetch-Site': 'same-origin', Origin: 'null', 'X-CSRF-Token': '' };

const platformsOf = async (c: Client) => {
  const res = await c.get('/api/platforms');
  expect(res.status, res.text).to.equal(200);
  return res.json.platforms as Array<{ id: number; name: string; type: string; active: boolean }>;
};

for (const database of ['sqlite', 'postgres'] as const) {
  describe(`PLATFORMS_MAX_PER_USER=${LIMIT}, on ${database === 'sqlite' ? 'SQLite' : 'PostgreSQL'}`, function () {
    this.timeout(60_000);
    let app: AppProcess;
    let db: TestDatabase | undefined;
    before(async () => {
      const env: Record<string, string> = { PLATFORMS_MAX_PER_USER: String(LIMIT) };
      if (database === 'postgres') {
        await ensureServices();
        db = await createTestDatabase('platform_limit');
        env.DATABASE_URL = db.url;
      }
      app = await startApp(env);
    });
    after(async () => {
      await app?.stop();
      await db?.drop();
    });

    async function user() {
      const c = new Client(app.url);
      await c.signup();
      return c;
    }

    it('creates up to the limit, and answers the one past it 400 invalid_input naming the limit; other users are not counted', async () => {
      const me = await user();
      const other = await user();
      expect((await other.post('/api/platforms', { name: 'Theirs', type: 'slack' })).status).to.equal(201);
      // A `?` in a value is text, not a placeholder.
      for (let i = 1; i <= LIMIT; i++) expect((await me.post('/api/platforms', { name: `P${i} ?`, type: 'github' })).status, `platform ${i}`).to.equal(201);
      const refused = expectError(await me.post('/api/platforms', { name: 'One too many', type: 'github' }), 400, 'invalid_input');
      expect(refused.error.message).to.equal(MESSAGE);
      expect(refused.error.fields, 'a form shows it above its fields').to.deep.equal({ _: MESSAGE });
      expect((await platformsOf(me)).map((p) => p.name)).to.deep.equal(Array.from({ length: LIMIT }, (_, i) => `P${i + 1} ?`));
      // Bad input is still told as such, not as the limit.
      expect(expectError(await me.post('/api/platforms', { name: 'x' }), 400, 'invalid_input').error.fields).to.have.property('type');
      expect((await other.post('/api/platforms', { name: 'Theirs too', type: 'slack' })).status, 'another user still creates').to.equal(201);
    });

    it(`keeps to the limit when one user's creates race: 20 at once leave exactly ${LIMIT}`, async () => {
      const me = await user();
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => me.post('/api/platforms', { name: `Race ${i}`, type: 'github' })));
      const statuses = answers.map((a) => a.status);
      expect(statuses.filter((s) => s === 201), statuses.join(' ')).to.have.length(LIMIT);
      for (const refused of answers.filter((a) => a.status !== 201)) expect(expectError(refused, 400, 'invalid_input').error.message).to.equal(MESSAGE);
      const listed = await platformsOf(me);
      expect(listed).to.have.length(LIMIT);
      const created = answers.filter((a) => a.status === 201).map((a) => (a.json.platform as { id: number }).id);
      expect(listed.map((p) => p.id).sort((a, b) => a - b)).to.deep.equal(created.sort((a, b) => a - b));
    });

    if (database === 'postgres') {
      // Waiting on the user's lock, each create held a pooled connection: a burst of 50 by one
      // user took 8 of the 10, and everybody's requests slowed (H7). They wait in the instance.
      it("waits out one user's burst of creates in the instance: no PostgreSQL connection waits on the user's lock", async () => {
        const me = await user();
        let sampling = true;
        let waitingMost = 0;
        const sampler = withPostgres(db!.url, async (pg) => {
          while (sampling) {
            const { rows } = await pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'", [db!.name]);
            waitingMost = Math.max(waitingMost, Number(rows[0]?.n ?? 0));
          }
        });
        try {
          const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => me.post('/api/platforms', { name: `Burst ${i}`, type: 'github' })));
          expect(answers.filter((a) => a.status === 201)).to.have.length(LIMIT);
        } finally {
          sampling = false;
          await sampler;
        }
        expect(waitingMost, 'connections waiting on the lock at once').to.equal(0);
      });
    }

    it('shows the sentence on the dashboard when the add-platform form was posted without JavaScript, with what was typed', async () => {
      const browser = await user();
      for (let i = 1; i <= LIMIT; i++) expect((await browser.post('/api/platforms', { name: `P${i}`, type: 'jira' })).status).to.equal(201);
      const post = await browser.post('/api/platforms', new URLSearchParams({ _csrf: browser.csrfToken!, name: 'Sixth', type: 'Linear' }).toString(), FORM_POST);
      expect(post.status).to.equal(303);
      expect(post.headers.get('location')).to.equal('/?error=invalid_input');
      const page = (await browser.get('/?error=invalid_input', { Accept: 'text/html' })).text;
      expect(page).to.match(new RegExp(`id="add-platform-error"[^>]*>${MESSAGE}</div>`));
      expect(page, 'not the general sentence').not.to.contain('Some of the fields are not valid');
      expect(page).to.match(/<input id="add-platform-name"[^>]* value="Sixth"/);
      expect(page).to.match(/<input id="add-platform-type"[^>]* value="Linear"/);
      expect(await platformsOf(browser)).to.have.length(LIMIT);
    });
  });
}
