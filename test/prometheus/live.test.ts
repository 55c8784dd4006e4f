/**
 * The shipped alert rules and dashboard, proven live: two Switchboard processes sharing one
 * PostgreSQL database and one Redis (SESSION_STORAGE=redis, SESSION_FALLBACK=database,
 * automatic rollback off), a real Prometheus scraping both every second with
 * config/prometheus/rules.yml loaded (windows shortened: `[5m]` → `[15s]`, `for: 2m` →
 * `for: 3s`), and browser-like clients working against both processes all along. Redis is
 * killed: the fallback, store-error and backend-down alerts fire; Redis comes back: they
 * resolve; nobody was logged out. Then every dashboard query runs on that Prometheus, and the
 * two instances' metrics are checked to add up.
 *
 * Every wait is a bounded poll of Prometheus's HTTP API; nothing asserts how long anything
 * took. Needs `prometheus` (Debian package), `redis-server` and the machine's PostgreSQL.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { freePort } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import {
  dashboardQueries,
  startPrometheus,
  substituteVariables,
  type Alert,
  type GrafanaDashboard,
  type PrometheusProcess,
  type Sample,
} from '../support/prometheus.js';
import { startRedis, type RedisProcess } from '../support/redis-server.js';

const RULES = fileURLToPath(new URL('../../config/prometheus/rules.yml', import.meta.url));
const DASHBOARD = fileURLToPath(new URL('../../config/grafana/switchboard.json', import.meta.url));
const JOB = 'switchboard';

/** The alerts a Redis outage must raise (names as in rules.yml), with the labels they carry. */
const OUTAGE_ALERTS: ReadonlyArray<{ name: string; labels: Record<string, string> }> = [
  { name: 'SessionStoreFallbackActive', labels: { to: 'database' } },
  { name: 'SessionStoreErrorRatioHigh', labels: { backend: 'redis' } },
  { name: 'SessionStoreDown', labels: { backend: 'redis' } },
];

/** Dashboard variables as Grafana would send them with "All" instances and a short range. */
const RANGE = '30s';
const DASHBOARD_VARIABLES: Record<string, string> = {
  instance: '.*',
  __rate_interval: RANGE,
  __interval: RANGE,
  __range: RANGE,
  __range_s: '30',
  __range_ms: '30000',
  __interval_ms: '30000',
};

/** Browser-like users, each making one request at a time. */
const USERS = 4;
/** Pause between two requests of one user: about 4 × 30 requests/s over both instances. */
const THINK_MS = 30;
/** Bounds of the traffic loop, far above what the test needs; after() stops it earlier. */
const MAX_REQUESTS_PER_USER = 6_000;
const MAX_TRAFFIC_MS = 240_000;
/** How long stopping the loop may wait for the requests in flight. */
const TRAFFIC_STOP_MS = 20_000;

/** Polls of Prometheus: every 250 ms, at most 360 times (90 s) for one condition. */
const POLL_MS = 250;
const POLL_ATTEMPTS = 360;
/** Alerts count as resolved when none is pending or firing in this many polls in a row (4 s: 4 evaluations). */
const CLEAR_POLLS = 16;
/** Queries that must agree with each other are evaluated this many seconds in the past. */
const SETTLED_S = 5;

/** Polls `check` until it returns a value other than `undefined`; throws with `describe()` if it never does. */
async function eventually<T>(what: string, check: () => Promise<T | undefined>, describe: () => string = () => ''): Promise<T> {
  let lastError = '';
  for (let attempt = 0; attempt < POLL_ATTEMPTS; attempt++) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`timed out waiting for ${what} (${POLL_ATTEMPTS} polls of ${POLL_MS} ms)${lastError ? `; last error: ${lastError}` : ''}\n${describe()}`);
}

const matches = (alert: Alert, name: string, labels: Record<string, string>): boolean =>
  alert.labels.alertname === name && Object.entries(labels).every(([k, v]) => alert.labels[k] === v);

const show = (alerts: Alert[]): string =>
  alerts.map((a) => `${a.state} ${JSON.stringify(a.labels)} value=${a.value}`).join('\n') || '(no alerts)';

/** One number out of a one-element (or empty: `undefined`) instant vector. */
const scalar = (samples: Sample[]): number | undefined => (samples[0] === undefined ? undefined : Number(samples[0].value[1]));

/**
 * A user with one cookie jar across both instances (they share the database, Redis and
 * secrets): request i goes to instance i % 2, so every session is read and written by both.
 */
class User {
  private readonly clients: [Client, Client];
  private current: 0 | 1 = 0;
  userId = 0;
  /** The last preference written and acknowledged; a GET must give it back. */
  n: number | undefined;

  constructor(urls: [string, string], name: string) {
    this.clients = [new Client(urls[0], name), new Client(urls[1], name)];
  }

  /** Sends one request through instance `which`, with the cookies and CSRF token of the last request. */
  async send<T>(which: 0 | 1, call: (client: Client) => Promise<T>): Promise<T> {
    const client = this.clients[which];
    if (which !== this.current) {
      const from = this.clients[this.current];
      client.cookies.clear();
      for (const [k, v] of from.cookies) client.cookies.set(k, v);
      client.csrfToken = from.csrfToken;
      this.current = which;
    }
    return call(client);
  }

  /** Signs up through instance `first`, then logs in again (a brand-new session) through the other. */
  async signUpAndLogIn(first: 0 | 1): Promise<void> {
    const { email, password, user } = await this.send(first, (c) => c.signup());
    this.userId = user.id;
    const login = await this.send(first === 0 ? 1 : 0, (c) => c.login(email, password));
    if (login.status !== 200) throw new Error(`login failed: ${login.status} ${login.text}`);
  }
}

type Phase = 'before' | 'outage' | 'after';

describe('live: rules and dashboard on a real Prometheus, two instances, Redis killed and restarted', function () {
  // Start-up ~20 s, outage ~15 s, recovery ~20 s, queries a few s; generous for a loaded machine.
  this.timeout(240_000);

  let db: TestDatabase | undefined;
  let redis: RedisProcess | undefined;
  let prometheus: PrometheusProcess | undefined;
  const apps: AppProcess[] = [];
  const targets: string[] = [];
  const users: User[] = [];

  // ---- the traffic loop
  let stopTraffic = false;
  let traffic: Promise<void> | undefined;
  let phase: Phase = 'before';
  const failures: string[] = [];
  const responses: Record<Phase, [number, number]> = { before: [0, 0], outage: [0, 0], after: [0, 0] };

  async function userLoop(user: User, index: number): Promise<void> {
    const deadline = Date.now() + MAX_TRAFFIC_MS;
    for (let i = 0; i < MAX_REQUESTS_PER_USER && !stopTraffic && Date.now() < deadline; i++) {
      const which = ((i + index) % 2) as 0 | 1;
      const during = phase;
      const patch = i % 2 === 1;
      const what = `user ${index} ${patch ? 'PATCH' : 'GET'} /api/session #${i} via instance ${which} (${during})`;
      try {
        const res = await user.send(which, (c) => (patch ? c.patch('/api/session', { preferences: { n: i } }) : c.get('/api/session')));
        responses[during][which]++;
        if (res.status < 200 || res.status > 299) {
          failures.push(`${what}: ${res.status} ${res.text.slice(0, 300)}`);
        } else if (patch) {
          const n = (res.json.preferences as { n?: number } | undefined)?.n;
          if (n !== i) failures.push(`${what}: answered preferences ${JSON.stringify(res.json.preferences)}`);
          else user.n = i;
        } else {
          const body = res.json as { authenticated?: boolean; user?: { id?: number }; preferences?: { n?: number } };
          if (body.authenticated !== true || body.user?.id !== user.userId) {
            failures.push(`${what}: not the user's session: ${res.text.slice(0, 300)}`);
          } else if (body.preferences?.n !== user.n) {
            failures.push(`${what}: preferences.n is ${body.preferences?.n}, last written ${user.n}`);
          }
        }
      } catch (err) {
        failures.push(`${what}: ${(err as Error).message}`);
      }
      await sleep(THINK_MS);
    }
  }

  /** Stops the loop and waits for its requests in flight (bounded: a hung request is reported, not waited for). */
  async function endTraffic(): Promise<void> {
    stopTraffic = true;
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<'hung'>((resolve) => {
      timer = setTimeout(() => resolve('hung'), TRAFFIC_STOP_MS);
    });
    try {
      if ((await Promise.race([traffic, hung])) === 'hung') failures.push(`a request of the traffic loop did not finish within ${TRAFFIC_STOP_MS} ms of the stop`);
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- Prometheus helpers
  const running = (): PrometheusProcess => {
    if (!prometheus) throw new Error('prometheus is not running');
    return prometheus;
  };
  const query = (expr: string, time?: number): Promise<Sample[]> => running().query(expr, time);
  const appOutput = (): string => apps.map((a, i) => `--- instance ${i} (${a.url}) output:\n${a.output().slice(-3000)}`).join('\n');

  before(async function () {
    this.timeout(180_000);
    db = await createTestDatabase('switchboard_live');
    redis = await startRedis();
    const env = {
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      SESSION_STORAGE: 'redis',
      SESSION_FALLBACK: 'database',
      SESSION_SECRETS: randomBytes(32).toString('base64url'),
      BREAKER_HALF_OPEN_AFTER_MS: '500',
      // Neither the automatic rollback nor the write-behind copy is under test here (they have
      // their own tests: test/flags/rollback.test.ts, test/switching/rollback.test.ts,
      // test/switching/fallback.test.ts). This test checks every response's data exactly across
      // a Redis kill, so the database copy is written through (MIRROR_FLUSH_MS=0): with the
      // default write-behind, a change made < 100 ms before the kill may be lost, as documented.
      MIRROR_FLUSH_MS: '0',
      ROLLBACK_ENABLED: 'false',
    };
    const ports = [await freePort(), await freePort()];
    targets.push(...ports.map((p) => `127.0.0.1:${p}`));
    // Prometheus starts while the apps do (its first scrape comes ~5 s after start anyway).
    // The apps start one after the other: both would run the migrations on the fresh database.
    const started = await Promise.allSettled([
      startPrometheus({ scrapeTargets: targets, rulesFiles: [RULES], shortenWindows: true }).then((p) => (prometheus = p)),
      (async () => {
        for (const port of ports) apps.push(await startApp({ ...env, PORT: String(port) }));
      })(),
    ]);
    for (const result of started) if (result.status === 'rejected') throw result.reason;

    const urls = apps.map((a) => a.url) as [string, string];
    for (let i = 0; i < USERS; i++) users.push(new User(urls, `live-${i}`));
    // Signups and logins on both instances: the login panels get data from each.
    await Promise.all(users.map((u, i) => u.signUpAndLogIn((i % 2) as 0 | 1)));
    traffic = Promise.all(users.map((u, i) => userLoop(u, i))).then(() => undefined);

    await prometheus?.waitForScrapes();
    // Both instances scraped, and Redis serving on each (a rate needs two scrapes with traffic).
    await eventually('Prometheus to see Redis operations on both instances', async () => {
      const rates = await query(`sum by (instance) (rate(session_store_operations_total{job="${JOB}",backend="redis",outcome="success"}[15s])) > 0`);
      return rates.length === 2 ? rates : undefined;
    });
  });

  after(async function () {
    this.timeout(60_000);
    await endTraffic();
    const steps: Array<() => Promise<unknown>> = [
      async () => prometheus?.stop(),
      ...apps.map((app) => () => app.stop()),
      async () => redis?.stop(),
      async () => db?.drop(),
    ];
    const errors: unknown[] = [];
    for (const step of steps) await step().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw errors[0];
  });

  it('scrapes both instances, each under its own instance label', async () => {
    const up = await query(`up{job="${JOB}"}`);
    expect(Object.fromEntries(up.map((s) => [s.metric.instance, s.value[1]]))).to.deep.equal({ [targets[0]!]: '1', [targets[1]!]: '1' });
    expect(scalar(await query(`count(up{job="${JOB}"} == 1)`))).to.equal(2);
    const byInstance = await query('count by (instance) (session_store_up)');
    expect(byInstance.map((s) => s.metric.instance).sort()).to.deep.equal([...targets].sort());
  });

  it('has none of the outage alerts pending or firing while Redis is up', async () => {
    // On a loaded machine a few Redis operations just after start-up can overrun their 250 ms
    // deadline (STORE_TIMEOUT_MS) and fall back, which the rules rightly report; with 15 s
    // windows that leaves them within seconds. What matters is a quiet start before the kill,
    // so that what fires afterwards is the outage's doing.
    let last: Alert[] = [];
    let quietPolls = 0;
    await eventually(
      'no outage alert pending or firing while Redis is up',
      async () => {
        last = (await prometheus?.alerts()) ?? [];
        const open = last.filter((a) => OUTAGE_ALERTS.some(({ name }) => a.labels.alertname === name));
        quietPolls = open.length === 0 ? quietPolls + 1 : 0;
        return quietPolls >= CLEAR_POLLS ? true : undefined;
      },
      () => `pending or firing:\n${show(last)}\n${appOutput()}`,
    );
  });

  it('fires SessionStoreFallbackActive, SessionStoreErrorRatioHigh and SessionStoreDown when Redis is killed', async () => {
    await redis?.kill();
    phase = 'outage';
    // An alert may fire and resolve again before another one fires (the error ratio's window
    // moves on), so each one is remembered once seen firing.
    const seen = new Map<string, Alert>();
    let last: Alert[] = [];
    await eventually(
      'every outage alert to fire',
      async () => {
        last = (await prometheus?.alerts()) ?? [];
        for (const { name, labels } of OUTAGE_ALERTS) {
          const alert = last.find((a) => a.state === 'firing' && matches(a, name, labels));
          if (alert && !seen.has(name)) seen.set(name, alert);
        }
        return seen.size === OUTAGE_ALERTS.length ? true : undefined;
      },
      () => `seen firing: ${[...seen.keys()].join(', ') || 'none'}\nlast /api/v1/alerts:\n${show(last)}`,
    );
    expect(seen.get('SessionStoreFallbackActive')?.labels).to.include({ to: 'database' });
    expect(seen.get('SessionStoreDown')?.annotations.summary).to.match(/^Session backend redis is down on [12] instance\(s\)$/);
    // The dashboard's "Fallbacks" panel shows the outage while it lasts: with the breaker open,
    // requests go straight to the database and no operation fails over, so the panel's
    // failed-over operations alone read 0 a few seconds into it (an SRE review).
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as GrafanaDashboard;
    const fallbacks = dashboardQueries(dashboard).filter((q) => q.panel?.title === 'Fallbacks');
    expect(fallbacks.length, 'the Fallbacks panel').to.be.greaterThan(1);
    await eventually(
      'the Fallbacks panel to show sessions going to the database',
      async () => {
        let total = 0;
        for (const { expr } of fallbacks) for (const s of await query(substituteVariables(expr, DASHBOARD_VARIABLES))) if (s.metric.to === 'database' || s.metric.backend === 'database') total += Number(s.value[1]);
        return total > 0 ? true : undefined;
      },
      () => 'the Fallbacks panel read 0 during the outage',
    );
  });

  it('resolves them once Redis is back', async () => {
    await redis?.restart();
    phase = 'after';
    // Resolved for good: not one of them pending or firing over several evaluations in a row
    // (an alert with another label set, such as a late `circuit_open` fallback, may come and go).
    let last: Alert[] = [];
    let clearPolls = 0;
    await eventually(
      'the outage alerts to resolve',
      async () => {
        last = (await prometheus?.alerts()) ?? [];
        const open = last.filter((a) => OUTAGE_ALERTS.some(({ name }) => a.labels.alertname === name));
        clearPolls = open.length === 0 ? clearPolls + 1 : 0;
        return clearPolls >= CLEAR_POLLS ? true : undefined;
      },
      () => `still pending or firing:\n${show(last)}`,
    );
    // Resolved because Redis serves again on both instances, not because traffic stopped.
    const up = await query('session_store_up{backend="redis"}');
    expect(up.map((s) => s.value[1]), 'session_store_up{backend="redis"}').to.deep.equal(['1', '1']);
    const redisOps = await query(`sum by (instance) (rate(session_store_operations_total{backend="redis",outcome="success"}[15s])) > 0`);
    const rollbacks = await query('session_rollbacks_total > 0');
    const readyz = await Promise.all(apps.map(async (a) => (await new Client(a.url).get('/readyz')).text));
    expect(redisOps, `Redis operations on both instances after recovery\nrollbacks: ${JSON.stringify(rollbacks)}\n/readyz: ${readyz.join('\n')}`).to.have.length(2);
  });

  it('runs every dashboard query on the live Prometheus, each with data after this traffic', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as GrafanaDashboard;
    const queries = dashboardQueries(dashboard);
    expect(queries.length).to.be.greaterThan(0);
    // Every counter series is initialised at 0, so even the panels of things that did not
    // happen here (revocations, timeouts, migrations) have series, at 0. Only the queries
    // filtered with `> 0` on session_rollbacks_total (the "Automatic rollbacks" stat and
    // annotation) are empty when no rollback happened — as here, with ROLLBACK_ENABLED=false:
    // those must be empty exactly then (and the check stays right if rollbacks are enabled).
    const rolledBack = (scalar(await query('sum(session_rollbacks_total)')) ?? 0) > 0;
    const empty: string[] = [];
    for (const { where, expr } of queries) {
      const substituted = substituteVariables(expr, DASHBOARD_VARIABLES);
      let result: Sample[];
      try {
        result = await query(substituted);
      } catch (err) {
        throw new Error(`${where}: ${(err as Error).message}\n${substituted}`);
      }
      const onlyWhenRolledBack = /session_rollbacks_total/.test(expr) && /\)\s*>\s*0\s*$/.test(expr);
      if (/\bunleash_/.test(expr)) {
        // Exported only by instances with UNLEASH_URL set, which these are not (the Unleash
        // panels are proven on a real Unleash in test/switching/unleash-rollout.test.ts).
        expect(result, `${where}: no instance here has Unleash\n${substituted}`).to.deep.equal([]);
      } else if (onlyWhenRolledBack) {
        expect(result.length > 0, `${where}: data iff a rollback happened (${rolledBack})\n${substituted}`).to.equal(rolledBack);
      } else if (result.length === 0) {
        empty.push(`${where}\n  ${substituted.replace(/\n/g, '\n  ')}`);
      }
    }
    expect(empty, `dashboard queries without data:\n${empty.join('\n')}`).to.deep.equal([]);
  });

  it('adds the two instances up: fleet-wide sums are the sums of the per-instance values', async () => {
    const range = '30s';
    // One evaluation time for every query, so that nothing moves between them; a few seconds
    // back, so that every scrape up to then has been stored (a sample is appended after its
    // scrape, stamped with the scrape's start).
    const at = Date.now() / 1000 - SETTLED_S;
    const fleet = await query(`sum by (backend) (rate(session_store_operations_total{job="${JOB}"}[${range}]))`, at);
    const perInstance = await query(`sum by (backend, instance) (rate(session_store_operations_total{job="${JOB}"}[${range}]))`, at);
    expect(fleet.map((s) => s.metric.backend).sort()).to.deep.equal(['cookie', 'database', 'redis']);
    for (const { metric, value } of fleet) {
      const parts = perInstance.filter((s) => s.metric.backend === metric.backend);
      expect(parts.map((s) => s.metric.instance).sort(), `${metric.backend}: one series per instance`).to.deep.equal([...targets].sort());
      const sum = parts.reduce((total, s) => total + Number(s.value[1]), 0);
      expect(Number(value[1]), `${metric.backend}: fleet rate = sum of the instances' rates`).to.be.closeTo(sum, 1e-9 * Math.max(1, sum));
    }
    // Both instances carried Redis and database traffic (the latter during the outage).
    for (const backend of ['redis', 'database']) {
      for (const target of targets) {
        const total = scalar(await query(`sum(session_store_operations_total{job="${JOB}",backend="${backend}",instance="${target}"})`, at));
        expect(total, `${backend} operations on ${target}`).to.be.greaterThan(0);
      }
    }

    // The recording rule is fleet-wide: at its latest evaluation it equals the sum of both
    // instances' rates over the (shortened) window, recomputed now at that evaluation's time.
    // Only close, not equal: a scrape is stamped with its start but stored once its body has
    // been read, so an evaluation that falls in between lacks a sample the recomputation has
    // (one scrape of fifteen in the window: CI saw 161.54 against 160.85). Rule and scrape
    // offsets are fixed for a run, so every evaluation of an unlucky run races. Each instance
    // carries about half the traffic, so a rule that missed one would be far off.
    const recorded = scalar(await query('backend:session_store_operations:rate5m{backend="redis"}', at));
    const when = scalar(await query('timestamp(backend:session_store_operations:rate5m{backend="redis"})', at));
    expect(recorded, 'the recording rule has a sample').to.be.greaterThan(0);
    const perInstanceAt = await Promise.all(targets.map(async (t) => scalar(await query(`sum(rate(session_store_operations_total{backend="redis",instance="${t}"}[15s]))`, when)) ?? 0));
    const total = perInstanceAt.reduce((a, b) => a + b, 0);
    for (const [i, rate] of perInstanceAt.entries()) expect(rate, `${targets[i]}'s share of the Redis operations`).to.be.greaterThan(total / 4);
    expect(total, `recomputed at ${when}`).to.be.closeTo(recorded!, recorded! / 10);
  });

  it('logged nobody out: every response of the traffic, before, during and after the outage, was 2xx with the user and data', async () => {
    await endTraffic();
    const summary = JSON.stringify(responses);
    expect(failures.slice(0, 20), `${failures.length} failed responses (${summary})\n${appOutput()}`).to.deep.equal([]);
    for (const p of ['before', 'outage', 'after'] as const) {
      for (const which of [0, 1] as const) expect(responses[p][which], `responses of instance ${which} ${p} the outage (${summary})`).to.be.greaterThan(0);
    }
  });
});
