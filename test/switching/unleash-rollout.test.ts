/**
 * A staged rollout driven by a real Unleash server: 0% → 50% → 100% of sessions move from the
 * database to Redis, each session staying on its side of the percentage, and the server keeps
 * serving from the last known state when Unleash goes away.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { dashboardQueries, startPrometheus, substituteVariables, type GrafanaDashboard, type PrometheusProcess } from '../support/prometheus.js';
import { UnleashTestServer } from '../support/unleash-server.js';
import { sample } from './metrics-text.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ADMIN_TOKEN = randomBytes(24).toString('hex');

interface FlagReport {
  value: string;
  source: string;
  env: string;
  unleash: { configured: boolean; flag: { enabled: boolean; strategies: Array<{ name: string; rollout?: number }>; backends: string[] } | null };
}

describe('a staged rollout through Unleash', function () {
  this.timeout(180_000);
  let unleash: UnleashTestServer;
  let app: AppProcess;
  /** Scrapes the app, for the dashboard's Unleash panels. */
  let prometheus: PrometheusProcess;
  const clients: Client[] = [];

  before(async () => {
    unleash = await UnleashTestServer.create();
    await unleash.createSessionStorageFlag(['redis']);
    await unleash.setRollout(0, 'redis');
    await unleash.enable();
    app = await startApp({
      SESSION_STORAGE: 'database',
      REDIS_URL: 'redis://127.0.0.1:6379/0',
      REDIS_KEY_PREFIX: `unleash-${randomBytes(4).toString('hex')}:`,
      UNLEASH_URL: unleash.apiUrl,
      UNLEASH_API_TOKEN: unleash.clientToken,
      UNLEASH_REFRESH_INTERVAL_MS: '500',
      SESSION_TOUCH_INTERVAL: '0',
      ADMIN_TOKEN,
      // What is tested is Unleash's rollout: on a busy machine a move to Redis can be rolled
      // back for its latency (test/flags/rollback.test.ts tests that trigger).
      ROLLBACK_ENABLED: 'false',
    });
    for (let i = 0; i < 40; i++) {
      const c = new Client(app.url);
      await c.signup();
      clients.push(c);
    }
    prometheus = await startPrometheus({ scrapeTargets: [new URL(app.url).host], rulesFiles: [] });
  });
  after(async () => {
    await prometheus?.stop();
    await app?.stop();
    await unleash?.destroy();
  });

  const backends = async () => Promise.all(clients.map(async (c) => {
    const res = await c.get('/api/session');
    expect(res.status, 'nobody is logged out').to.equal(200);
    return (res.json.session as { backend: string }).backend;
  }));

  /** Polls (bounded) until the share of sessions on Redis satisfies `ok`. */
  async function until(ok: (onRedis: number) => boolean) {
    let seen: string[] = [];
    for (let i = 0; i < 60; i++) {
      seen = await backends();
      if (ok(seen.filter((b) => b === 'redis').length)) return seen;
      await sleep(250);
    }
    throw new Error(`rollout never reached the expected share: ${seen.filter((b) => b === 'redis').length}/${seen.length} on redis`);
  }

  /** What an operator is told: GET /api/admin/flags, and the same in /readyz. */
  async function reported(): Promise<FlagReport & { readyz: { active: string; source: string } }> {
    const flags = (await new Client(app.url).get('/api/admin/flags', { Authorization: `Bearer ${ADMIN_TOKEN}` })).json as unknown as FlagReport;
    const readyz = (await new Client(app.url).get('/readyz')).json as { active: string; source: string };
    return { ...flags, readyz };
  }

  it('keeps everyone on the database at 0%, and says the environment decides', async () => {
    const seen = await backends();
    expect(seen.every((b) => b === 'database')).to.equal(true);
    const flag = await reported();
    expect(flag).to.include({ value: 'database', source: 'env', env: 'database' });
    expect(flag.unleash.flag).to.deep.equal({ enabled: true, strategies: [{ name: 'flexibleRollout', rollout: 0 }], backends: ['redis'] });
    expect(flag.readyz).to.include({ active: 'database', source: 'env' });
  });

  it('moves about half the sessions at 50%, each one stably', async () => {
    await unleash.setRollout(50, 'redis');
    const first = await until((n) => n > 0);
    await sleep(1500);
    const settled = await backends();
    const onRedis = settled.filter((b) => b === 'redis').length;
    expect(onRedis).to.be.within(8, 32);
    // Stickiness: asking again puts every session on the same side. Asked a few times (bounded):
    // on a busy machine a Redis read that missed its deadline is served by the fallback, once.
    // A rollout that was not sticky would move about half of the 40 on every round.
    let again = await backends();
    for (let i = 0; i < 4 && JSON.stringify(again) !== JSON.stringify(settled); i++) again = await backends();
    expect(again).to.deep.equal(settled);
    expect(first.length).to.equal(clients.length);
    const metrics = (await new Client(app.url).get('/metrics')).text;
    expect(sample(metrics, 'session_backend_selected_total', { backend: 'redis', source: 'unleash' })).to.be.greaterThan(0);
    // The operator sees the backend being rolled out, from where, and how far.
    const flag = await reported();
    expect(flag).to.include({ value: 'redis', source: 'unleash', env: 'database' });
    expect(flag.unleash.flag?.strategies).to.deep.equal([{ name: 'flexibleRollout', rollout: 50 }]);
    expect(flag.readyz).to.include({ active: 'redis', source: 'unleash' });
  });

  const metricsText = async () => (await new Client(app.url).get('/metrics')).text;

  /**
   * What the dashboard's Unleash panels show (config/grafana/switchboard.json), by panel title,
   * as Prometheus answers their queries: polled (bounded) until `ok` holds, as a scrape comes
   * every second.
   */
  async function unleashPanels(ok: (shown: Record<string, number>) => boolean): Promise<Record<string, number>> {
    const dashboard = JSON.parse(readFileSync(new URL('../../config/grafana/switchboard.json', import.meta.url), 'utf8')) as GrafanaDashboard;
    const panels = dashboardQueries(dashboard).filter((q) => /\bunleash_/.test(q.expr));
    expect(panels.map((q) => q.panel?.title)).to.have.length(2);
    let shown: Record<string, number> = {};
    for (let i = 0; i < 60; i++) {
      shown = {};
      for (const { expr, panel } of panels) {
        const [first] = await prometheus.query(substituteVariables(expr, { instance: '.*' }));
        if (first) shown[panel?.title ?? '?'] = Number(first.value[1]);
      }
      if (ok(shown)) return shown;
      await sleep(250);
    }
    throw new Error(`the Unleash panels never showed what was expected: ${JSON.stringify(shown)}`);
  }
  const REACHABLE = 'Unleash reachable (worst instance)';
  const AGE = 'Age of the rollout served (since the last Unleash sync)';

  it('moves everyone at 100%', async () => {
    await unleash.setRollout(100, 'redis');
    await until((n) => n === clients.length);
    const text = await metricsText();
    expect(sample(text, 'unleash_up'), 'unleash_up while Unleash answers').to.equal(1);
    expect(sample(text, 'unleash_last_sync_timestamp_seconds')).to.be.closeTo(Date.now() / 1000, 60);
    await prometheus.waitForScrapes();
    const shown = await unleashPanels((p) => p[REACHABLE] === 1 && p[AGE] !== undefined);
    expect(shown[AGE], 'the rollout served is recent').to.be.within(0, 60);
  });

  it('keeps serving the last state when Unleash is stopped', async () => {
    await unleash.stop();
    await sleep(1500);
    // What an SRE's alert (UnleashUnreachable) reads: this instance's rollout is frozen.
    for (let i = 0; i < 60 && sample(await metricsText(), 'unleash_up') !== 0; i++) await sleep(250);
    expect(sample(await metricsText(), 'unleash_up'), 'unleash_up once Unleash is gone').to.equal(0);
    const before = await unleashPanels((p) => p[REACHABLE] === 0);
    // The rollout served ages while Unleash is away: the panel shows it growing.
    await unleashPanels((p) => (p[AGE] ?? 0) >= (before[AGE] ?? Infinity) + 2);
    // Lost, the state would give way to SESSION_STORAGE (database) for good; a session that a
    // busy machine's Redis deadline sent to the fallback comes back on a later request.
    await until((n) => n === clients.length);
    expect((await reported()).source, 'the last state still decides').to.equal('unleash');
    const late = new Client(app.url);
    await late.signup();
    expect(((await late.get('/api/session')).json.session as { backend: string }).backend).to.equal('redis');
  });
});
