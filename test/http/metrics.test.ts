/**
 * Operations endpoints (API.md, Operations): /healthz, /readyz, and /metrics with every metric
 * name and label that dashboards and alert rules rely on, valid for `promtool check metrics`.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { waitUntil } from '../support/redis-server.js';
import { ADMIN_TOKEN, backendEnv, GOOD_PASSWORD } from './helpers.js';

/** The table in API.md: name → type and label names. */
const CONTRACT: Record<string, { type: 'counter' | 'gauge' | 'histogram'; labels: string[] }> = {
  session_store_operation_duration_seconds: { type: 'histogram', labels: ['backend', 'operation'] },
  session_store_operations_total: { type: 'counter', labels: ['backend', 'operation', 'outcome'] },
  session_store_fallbacks_total: { type: 'counter', labels: ['from', 'to', 'reason'] },
  session_migrations_total: { type: 'counter', labels: ['from', 'to'] },
  session_backend_selected_total: { type: 'counter', labels: ['backend', 'source'] },
  session_store_up: { type: 'gauge', labels: ['backend'] },
  session_rollbacks_total: { type: 'counter', labels: ['from', 'to', 'trigger'] },
  auth_logins_total: { type: 'counter', labels: ['outcome'] },
  session_revocations_total: { type: 'counter', labels: ['reason'] },
  http_request_duration_seconds: { type: 'histogram', labels: ['method', 'route', 'status'] },
};
const REVOCATION_REASONS = ['logout', 'user', 'others', 'password_change', 'admin', 'disabled', 'revoke_all', 'limit'];
const BACKEND_NAMES = ['cookie', 'database', 'redis'];

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format into samples (enough for these checks). */
function parse(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    expect(m, `a sample line: ${line}`).to.not.equal(null);
    const labels: Record<string, string> = {};
    for (const pair of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: m![1]!, labels, value: Number(m![3]) });
  }
  return { types, samples };
}

function value(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

/** Runs `promtool check metrics` on `text`; fails (never skips) when promtool is missing. */
function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('promtool is not installed or not on PATH (Debian/Ubuntu: apt-get install -y prometheus; CI installs it)') : err),
    );
    child.once('close', (code) => resolve({ code: code ?? -1, output }));
    child.stdin.end(text);
  });
}

describe('operations endpoints', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp(backendEnv('database', { ADMIN_TOKEN, SESSION_MAX_PER_USER: '2' }));
  });
  after(() => app?.stop());

  const scrape = async () => {
    const res = await fetch(`${app.url}/metrics`);
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/plain/);
    return res.text();
  };

  describe('GET /healthz and /readyz', () => {
    it('/healthz answers 200 while the process serves', async () => {
      const res = await fetch(`${app.url}/healthz`);
      expect(res.status).to.equal(200);
    });

    it('/readyz answers 200 with {status, active, fallback, backends: {cookie, database, redis}}', async () => {
      const res = await fetch(`${app.url}/readyz`);
      expect(res.status).to.equal(200);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).to.include.all.keys(['status', 'active', 'fallback', 'backends']);
      expect(body.status).to.be.a('string');
      expect(body.active).to.equal('database');
      expect(body.fallback).to.equal('database');
      const backends = body.backends as Record<string, string>;
      expect(backends).to.have.all.keys(BACKEND_NAMES);
      for (const b of BACKEND_NAMES) expect(backends[b], b).to.be.oneOf(['up', 'down', 'disabled']);
      expect(backends.database).to.equal('up');
      expect(backends.redis).to.equal('up');
      expect(backends.cookie).to.equal('up');
    });

    it('/readyz follows the flag: an override shows up as the active backend', async () => {
      const admin = { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' };
      await fetch(`${app.url}/api/admin/flags/session-storage`, { method: 'PUT', headers: admin, body: JSON.stringify({ backend: 'redis' }) });
      try {
        const body = (await (await fetch(`${app.url}/readyz`)).json()) as Record<string, unknown>;
        expect(body.active).to.equal('redis');
      } finally {
        await fetch(`${app.url}/api/admin/flags/session-storage`, { method: 'DELETE', headers: admin });
      }
    });
  });

  describe('GET /metrics', () => {
    it('exposes every contract metric with its type and documented labels', async () => {
      const text = await scrape();
      const { types, samples } = parse(text);
      for (const [name, { type, labels }] of Object.entries(CONTRACT)) {
        expect(types.get(name), `# TYPE ${name}`).to.equal(type);
        const own = samples.filter((s) => (type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`].includes(s.name) : s.name === name));
        if (name === 'http_request_duration_seconds') continue; // only after a request; checked below
        expect(own.length, `${name} has samples before any traffic`).to.be.greaterThan(0);
        for (const s of own) {
          const names = Object.keys(s.labels).filter((l) => l !== 'le');
          expect(names.sort(), `${name} labels`).to.deep.equal([...labels].sort());
        }
      }
    });

    it('starts counters at 0 for every documented label value', async () => {
      const { samples } = parse(await scrape());
      for (const reason of REVOCATION_REASONS) expect(value(samples, 'session_revocations_total', { reason }), `revocations ${reason}`).to.be.a('number');
      expect(value(samples, 'session_revocations_total', { reason: 'limit' })).to.equal(0);
      expect(value(samples, 'session_revocations_total', { reason: 'revoke_all' })).to.equal(0);
      for (const backend of BACKEND_NAMES) {
        for (const operation of ['load', 'save', 'destroy', 'touch', 'list']) {
          for (const outcome of ['success', 'error', 'timeout']) {
            expect(value(samples, 'session_store_operations_total', { backend, operation, outcome }), `${backend} ${operation} ${outcome}`).to.be.a('number');
          }
          expect(value(samples, 'session_store_operation_duration_seconds_count', { backend, operation }), `${backend} ${operation} duration`).to.be.a('number');
          expect(value(samples, 'session_store_operation_duration_seconds_bucket', { backend, operation, le: '0.0001' }), 'first bucket 0.0001').to.be.a('number');
        }
        for (const source of ['override', 'unleash', 'env', 'fallback']) {
          expect(value(samples, 'session_backend_selected_total', { backend, source }), `${backend} ${source}`).to.be.a('number');
        }
        expect(value(samples, 'session_store_up', { backend }), `${backend} up`).to.equal(1);
        for (const to of BACKEND_NAMES.filter((b) => b !== backend)) {
          expect(value(samples, 'session_migrations_total', { from: backend, to }), `migrations ${backend}→${to}`).to.be.a('number');
          for (const trigger of ['error_rate', 'latency']) expect(value(samples, 'session_rollbacks_total', { from: backend, to, trigger })).to.equal(0);
          expect(samples.some((s) => s.name === 'session_store_fallbacks_total' && s.labels.from === backend && s.labels.to === to), `fallbacks ${backend}→${to}`).to.equal(true);
        }
      }
      expect(samples.some((s) => s.name === 'auth_logins_total'), 'auth_logins_total has series').to.equal(true);
    });

    it('labels request durations with the route pattern, never the raw path', async () => {
      const me = new Client(app.url);
      const { email } = await me.signup();
      const other = new Client(app.url);
      await other.login(email, GOOD_PASSWORD);
      const handle = ((await other.get('/api/session')).json.session as { handle: string }).handle;
      expect((await me.delete(`/api/sessions/${encodeURIComponent(handle)}`)).status).to.equal(204);
      const platform = (await me.post('/api/platforms', { name: 'P', type: 't' })).json.platform as { id: number };
      expect((await me.post(`/api/platforms/${platform.id}/activate`)).status).to.equal(200);
      await me.get('/api/no-such-route-xyzzy');
      await me.delete('/api/sessions/not-a-real-handle-qwerty');
      await fetch(`${app.url}/api/admin/users/987654/sessions`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });

      const { samples } = parse(await scrape());
      const routes = new Set(samples.filter((s) => s.name === 'http_request_duration_seconds_count').map((s) => s.labels.route));
      expect([...routes]).to.include.members(['/api/signup', '/api/login', '/api/session', '/api/sessions/:handle', '/api/platforms', '/api/platforms/:id/activate', '/api/admin/users/:id/sessions']);
      for (const route of routes) {
        expect(route, 'no handle in a route label').not.to.include(handle);
        expect(route).not.to.include('not-a-real-handle-qwerty');
        expect(route).not.to.include('no-such-route-xyzzy');
        expect(route).not.to.include('987654');
        expect(route).not.to.match(new RegExp(`/${platform.id}/`));
      }
      const deleted = samples.find((s) => s.name === 'http_request_duration_seconds_count' && s.labels.route === '/api/sessions/:handle' && s.labels.method === 'DELETE' && s.labels.status === '204');
      expect(deleted?.value, 'DELETE /api/sessions/:handle 204 counted').to.be.at.least(1);
      const notFound = samples.find((s) => s.name === 'http_request_duration_seconds_count' && s.labels.route === '/api/sessions/:handle' && s.labels.status === '404');
      expect(notFound?.value, 'the 404 for an unknown handle is counted under the pattern with its status').to.be.at.least(1);
    });

    it('counts a request refused before its route ran (CSRF, bad JSON, admin token, wrong method) under that route, and only unknown paths as unmatched', async () => {
      const me = new Client(app.url);
      await me.signup();
      const count = (samples: Sample[], method: string, route: string, status: string) =>
        value(samples, 'http_request_duration_seconds_count', { method, route, status }) ?? 0;
      const before = parse(await scrape()).samples;
      expect((await me.post('/api/logout', {}, { 'X-CSRF-Token': 'wrong' })).status).to.equal(403);
      expect((await new Client(app.url).request('POST', '/api/login', '{"email":', { 'Content-Type': 'application/json' })).status).to.equal(400);
      expect((await new Client(app.url).get('/api/admin/users/1/sessions')).status).to.equal(401);
      expect((await me.request('PUT', '/api/session', {})).status).to.equal(405);
      expect((await me.get('/api/no-such-route-plugh')).status).to.equal(404);
      const after = parse(await scrape()).samples;
      for (const [method, route, status] of [
        ['POST', '/api/logout', '403'],
        ['POST', '/api/login', '400'],
        ['GET', '/api/admin/users/:id/sessions', '401'],
        ['PUT', '/api/session', '405'],
        ['GET', 'unmatched', '404'],
      ] as const) {
        expect(count(after, method, route, status) - count(before, method, route, status), `${method} ${route} ${status}`).to.equal(1);
      }
    });

    it('counts logins, and revocations by reason', async () => {
      const before = parse(await scrape()).samples;
      const me = new Client(app.url);
      const { email } = await me.signup();
      await new Client(app.url).login(email, 'wrong password for sure');
      const second = new Client(app.url);
      await second.login(email, GOOD_PASSWORD);
      const third = new Client(app.url);
      await third.login(email, GOOD_PASSWORD); // SESSION_MAX_PER_USER=2: the signup session goes
      await third.post('/api/sessions/revoke-others');
      await third.post('/api/logout');
      const after = parse(await scrape()).samples;
      const delta = (name: string, labels: Record<string, string>) => (value(after, name, labels) ?? 0) - (value(before, name, labels) ?? 0);
      expect(delta('auth_logins_total', { outcome: 'success' })).to.equal(2);
      expect(delta('auth_logins_total', { outcome: 'failure' })).to.equal(1);
      expect(delta('session_revocations_total', { reason: 'limit' })).to.equal(1);
      expect(delta('session_revocations_total', { reason: 'others' })).to.equal(1);
      expect(delta('session_revocations_total', { reason: 'logout' })).to.equal(1);
    });

    it('counts a password change and admin actions under their reasons', async () => {
      const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
      const before = parse(await scrape()).samples;
      const me = new Client(app.url);
      const { email, user } = await me.signup();
      const other = new Client(app.url);
      await other.login(email, GOOD_PASSWORD);
      expect((await me.post('/api/password', { currentPassword: GOOD_PASSWORD, newPassword: 'another good passphrase 7' })).status).to.equal(204);
      const third = new Client(app.url);
      await third.login(email, 'another good passphrase 7');
      const res = await fetch(`${app.url}/api/admin/users/${user.id}/sessions`, { method: 'DELETE', headers: admin });
      expect(((await res.json()) as { revoked: number }).revoked).to.equal(2);
      const fourth = new Client(app.url);
      await fourth.login(email, 'another good passphrase 7');
      const patch = await fetch(`${app.url}/api/admin/users/${user.id}`, { method: 'PATCH', headers: { ...admin, 'Content-Type': 'application/json' }, body: JSON.stringify({ active: false }) });
      expect(patch.status).to.equal(200);
      const after = parse(await scrape()).samples;
      const delta = (reason: string) => (value(after, 'session_revocations_total', { reason }) ?? 0) - (value(before, 'session_revocations_total', { reason }) ?? 0);
      expect(delta('password_change'), 'password_change').to.equal(1);
      expect(delta('admin'), 'admin').to.equal(2);
      expect(delta('disabled'), 'disabled').to.equal(1);
    });

    it('passes promtool check metrics on a real scrape after traffic', async () => {
      const c = new Client(app.url);
      await c.signup();
      await c.get('/api/sessions');
      await c.get('/nope');
      const text = await scrape();
      const { code, output } = await promtoolCheck(text);
      expect(code, `promtool check metrics:\n${output}`).to.equal(0);
    });
  });
});

/**
 * Under the redis backend the database is written behind (each session's copy). Those writes
 * are the database's operations for its error ratio — failures and successes both, or a
 * handful of failed copies would read as a failing database — and are not timed (no request
 * waits for them).
 */
describe('a revoke-all in the metrics', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp(backendEnv('database', { ADMIN_TOKEN }));
  });
  after(() => app?.stop());

  it('counts the live sessions it ended, not the call, once the database has counted them (the answer does not wait)', async () => {
    const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
    const revokeAll = async () => expect((await fetch(`${app.url}/api/admin/sessions/revoke-all`, { method: 'POST', headers: admin })).status).to.equal(200);
    const revokedAll = async () => value(parse(await (await fetch(`${app.url}/metrics`)).text()).samples, 'session_revocations_total', { reason: 'revoke_all' }) ?? 0;
    const counted = (what: string, expected: number) => waitUntil(what, async () => (await revokedAll()) === expected, 50);
    const people = [new Client(app.url), new Client(app.url), new Client(app.url)];
    for (const person of people) await person.signup();
    expect((await people[2]!.post('/api/logout')).status).to.equal(204);
    await revokeAll();
    await counted('the two sessions still live', 2);
    for (const person of people) expect((await person.get('/api/session')).status).to.equal(401);
    // Nothing live is left for the next; then one new session for the one after.
    await revokeAll();
    await new Client(app.url).signup();
    await revokeAll();
    await counted('the later sign-up', 3);
    expect(await revokedAll()).to.equal(3);
  });
});

describe('the database copies of Redis sessions in the store metrics', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp(backendEnv('redis'));
  });
  after(() => app?.stop());

  it('counts the copies written, without timing them', async () => {
    const scrapeNow = async () => parse(await (await fetch(`${app.url}/metrics`)).text()).samples;
    const before = await scrapeNow();
    const c = new Client(app.url);
    await c.signup();
    await c.patch('/api/session', { preferences: { theme: 'dark' } });
    const labels = { backend: 'database', operation: 'save' };
    let after = await scrapeNow();
    for (let i = 0; i < 50 && (value(after, 'session_store_operations_total', { ...labels, outcome: 'success' }) ?? 0) - (value(before, 'session_store_operations_total', { ...labels, outcome: 'success' }) ?? 0) < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100)); // the copy of the save is written behind
      after = await scrapeNow();
    }
    const counted = (value(after, 'session_store_operations_total', { ...labels, outcome: 'success' }) ?? 0) - (value(before, 'session_store_operations_total', { ...labels, outcome: 'success' }) ?? 0);
    const timed = (value(after, 'session_store_operation_duration_seconds_count', labels) ?? 0) - (value(before, 'session_store_operation_duration_seconds_count', labels) ?? 0);
    expect(counted, 'the copy at login and the copy of the save').to.be.at.least(2);
    expect(timed).to.equal(0);
  });
});
