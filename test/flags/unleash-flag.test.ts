import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BackendName } from '../../src/config/config.js';
import { backendOfVariant, UnleashBackendFlag, type UnleashFlagOptions } from '../../src/flags/unleash-flag.js';
import { waitUntil } from '../support/redis-server.js';
import { UnleashTestServer } from '../support/unleash-server.js';

const REFRESH_MS = 500;
/** waitUntil polls every 50 ms: this many attempts bound a wait to a minute. */
const A_MINUTE = 1200;

interface LogEntry { level: 'warn' | 'info'; obj: object; msg: string }

function recordingLogger(entries: LogEntry[]): NonNullable<UnleashFlagOptions['logger']> {
  return {
    warn: (obj, msg) => entries.push({ level: 'warn', obj, msg }),
    info: (obj, msg) => entries.push({ level: 'info', obj, msg }),
  };
}

describe('UnleashBackendFlag', function () {
  describe('backendOfVariant', function () {
    it('takes the backend from the payload value, else from the variant name', function () {
      expect(backendOfVariant({ name: 'treatment', enabled: true, payload: { value: 'redis' } })).to.equal('redis');
      expect(backendOfVariant({ name: 'cookie', enabled: true })).to.equal('cookie');
      expect(backendOfVariant({ name: 'database', enabled: true, payload: { value: 'not-a-backend' } })).to.equal('database');
    });

    it('answers undefined for a disabled variant or one that names no backend', function () {
      expect(backendOfVariant({ name: 'disabled', enabled: false })).to.equal(undefined);
      expect(backendOfVariant({ name: 'redis', enabled: false })).to.equal(undefined);
      expect(backendOfVariant({ name: 'memcached', enabled: true, payload: { value: 42 } })).to.equal(undefined);
    });
  });

  describe('against a real Unleash server', function () {
    this.timeout(120_000);

    const handles = Array.from({ length: 2000 }, () => randomBytes(12).toString('base64url'));
    const probe = handles[0]!;
    const logs: LogEntry[] = [];
    const tempDirs: string[] = [];
    const clients: UnleashBackendFlag[] = [];
    let server: UnleashTestServer;
    let backupPath: string;
    let flag: UnleashBackendFlag;

    function newFlag(dir: string): UnleashBackendFlag {
      const client = new UnleashBackendFlag({
        url: server.apiUrl,
        token: server.clientToken,
        appName: 'switchboard-test',
        refreshIntervalMs: REFRESH_MS,
        backupPath: dir,
        logger: recordingLogger(logs),
      });
      clients.push(client);
      return client;
    }

    function tempDir(): string {
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      tempDirs.push(dir);
      return dir;
    }

    const assignments = (client: UnleashBackendFlag) => handles.map((h) => client.backendFor(h));

    /** Changes a rollout and waits until the SDK serves it, `applied` telling the new state from the old. */
    async function change(what: string, admin: () => Promise<void>, applied: () => boolean): Promise<void> {
      await admin();
      await waitUntil(`the SDK to see ${what}`, applied, A_MINUTE);
    }

    before(async function () {
      server = await UnleashTestServer.create();
      backupPath = tempDir();
      flag = newFlag(backupPath);
    });

    after(async function () {
      for (const client of clients) await client.close();
      await server?.destroy();
      for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
    });

    it('answers undefined for every session while the flag does not exist', async function () {
      await waitUntil('a first answer from the server', () => flag.status().reachable && flag.status().hasState, A_MINUTE);
      expect(assignments(flag).every((b) => b === undefined)).to.equal(true);
      expect(flag.rollout(), 'no flag, nothing to describe').to.equal(undefined);
    });

    it('assigns no session at rollout 0%', async function () {
      await server.createSessionStorageFlag(['cookie', 'database']);
      // Go through 100% first: only a state that differs from "nobody" shows that changes arrive.
      await change('100% cookie', async () => {
        await server.setRollout(100, 'cookie');
        await server.enable();
      }, () => flag.backendFor(probe) === 'cookie');
      await change('0%', () => server.setRollout(0, 'cookie'), () => flag.backendFor(probe) === undefined);
      expect(assignments(flag).every((b) => b === undefined)).to.equal(true);
    });

    let inAt50: Set<string>;

    it('assigns about half the sessions at 50%, each session the same backend every time', async function () {
      await change('50% redis', () => server.setRollout(50, 'redis'), () => handles.some((h) => flag.backendFor(h) === 'redis'));
      const first = assignments(flag);
      expect(first.every((b) => b === 'redis' || b === undefined)).to.equal(true);
      inAt50 = new Set(handles.filter((_, i) => first[i] === 'redis'));
      expect(flag.rollout()).to.deep.equal({ enabled: true, strategies: [{ name: 'flexibleRollout', rollout: 50 }], backends: ['redis'] });
      expect(inAt50.size).to.be.within(700, 1300);
      for (let round = 0; round < 3; round++) expect(assignments(flag)).to.deep.equal(first);
    });

    it('keeps every session already in when the rollout is raised, and adds others', async function () {
      const outAt50 = handles.filter((h) => !inAt50.has(h));
      await change('75% redis', () => server.setRollout(75, 'redis'), () => outAt50.some((h) => flag.backendFor(h) === 'redis'));
      const inAt75 = new Set(handles.filter((h) => flag.backendFor(h) === 'redis'));
      expect([...inAt50].every((h) => inAt75.has(h)), 'every session in at 50% is still in at 75%').to.equal(true);
      expect(inAt75.size).to.be.within(inAt50.size + 1, 1999);

      await change('100% redis', () => server.setRollout(100, 'redis'), () => handles.every((h) => flag.backendFor(h) === 'redis'));
    });

    it('takes the backend from the variant name', async function () {
      for (const backend of ['cookie', 'database'] as BackendName[]) {
        await change(`100% ${backend}`, () => server.setRollout(100, backend), () => flag.backendFor(probe) === backend);
        expect(assignments(flag).every((b) => b === backend), `every session on ${backend}`).to.equal(true);
      }
    });

    it('assigns no session while the flag is disabled', async function () {
      await change('the flag disabled', () => server.disable(), () => flag.backendFor(probe) === undefined);
      expect(assignments(flag).every((b) => b === undefined)).to.equal(true);
      expect(flag.rollout()?.enabled).to.equal(false);
      await change('the flag enabled', () => server.enable(), () => flag.backendFor(probe) === 'database');
    });

    it('says once, in the log and in its description, that a variant names no backend, and assigns nothing by it', async function () {
      const ignoredWarnings = () => logs.filter((e) => e.level === 'warn' && /name no session backend/.test(e.msg));
      expect(ignoredWarnings()).to.have.length(0);
      await change('100% memcached', () => server.setRollout(100, 'memcached'), () => flag.backendFor(probe) === undefined);
      expect(assignments(flag).every((b) => b === undefined)).to.equal(true);
      expect(flag.rollout()).to.deep.include({ backends: [], ignoredVariants: ['memcached'] });
      await waitUntil('the warning', () => ignoredWarnings().length > 0, A_MINUTE);
      // Later polls bring the same flag: no more lines.
      const polled = flag.status().lastSyncAt;
      await waitUntil('another poll', () => flag.status().lastSyncAt !== polled, A_MINUTE);
      expect(ignoredWarnings()).to.have.length(1);
      expect(ignoredWarnings()[0]!.obj).to.deep.include({ variants: ['memcached'] });
      await change('100% database', () => server.setRollout(100, 'database'), () => flag.backendFor(probe) === 'database');
      expect(flag.rollout()).to.not.have.property('ignoredVariants');
    });

    it('reports a reachable server with state', function () {
      const status = flag.status();
      expect(status).to.include({ configured: true, reachable: true, hasState: true });
      expect(status.lastError).to.equal(undefined);
      expect(Number.isNaN(Date.parse(status.lastSyncAt ?? ''))).to.equal(false);
    });

    it('keeps serving the last state when the server stops, and reports it unreachable', async function () {
      await server.stop();
      await waitUntil('the SDK to notice the server is gone', () => !flag.status().reachable, A_MINUTE);
      const status = flag.status();
      expect(status.hasState).to.equal(true);
      expect(status.lastError).to.be.a('string');
      expect(assignments(flag).every((b) => b === 'database')).to.equal(true);
    });

    it('serves the backed-up state from a client started while the server is down', async function () {
      expect(existsSync(path.join(backupPath, 'unleash-backup-switchboard-test.json'))).to.equal(true);
      const fresh = newFlag(backupPath);
      await waitUntil('the backup to load', () => fresh.status().hasState, A_MINUTE);
      expect(fresh.status().reachable).to.equal(false);
      expect(assignments(fresh).every((b) => b === 'database')).to.equal(true);
    });

    it('answers undefined from a client started while the server is down without a backup', async function () {
      const fresh = newFlag(tempDir());
      expect(fresh.backendFor(probe)).to.equal(undefined);
      await waitUntil('the first poll to fail', () => fresh.status().lastError !== undefined, A_MINUTE);
      expect(fresh.status()).to.include({ reachable: false, hasState: false });
      expect(fresh.rollout(), "no state, nothing to describe").to.equal(undefined);
      expect(fresh.backendFor(probe)).to.equal(undefined);
    });

    it('follows the flag again once the server is back', async function () {
      await server.start();
      await waitUntil('the SDK to reach the server again', () => flag.status().reachable, A_MINUTE);
      await change('100% redis after restart', () => server.setRollout(100, 'redis'), () => flag.backendFor(probe) === 'redis');
      expect(flag.status().lastError).to.equal(undefined);
    });

    it('reports a token the server refuses', async function () {
      const refused = new UnleashBackendFlag({
        url: server.apiUrl,
        token: `${server.clientToken}-wrong`,
        appName: 'switchboard-test-refused',
        refreshIntervalMs: REFRESH_MS,
        backupPath: tempDir(),
        logger: recordingLogger(logs),
      });
      clients.push(refused);
      await waitUntil('the refusal', () => refused.status().lastError !== undefined, A_MINUTE);
      expect(refused.status()).to.include({ reachable: false, hasState: false });
      expect(refused.status().lastError).to.match(/401|403/);
    });

    it('never logs the token', function () {
      const secret = server.clientToken.split('.')[1]!;
      expect(logs.length).to.be.greaterThan(0);
      expect(JSON.stringify(logs)).not.to.include(secret);
    });
  });

  describe('against a misbehaving server', function () {
    this.timeout(60_000);

    let fake: Server;
    const held: ServerResponse[] = [];
    let respond: (res: ServerResponse) => void;

    function fakeFlag(appName: string, logs: LogEntry[], dir: string): UnleashBackendFlag {
      const { port } = fake.address() as AddressInfo;
      return new UnleashBackendFlag({
        url: `http://127.0.0.1:${port}/api`,
        token: 'default:development.not-a-real-token',
        appName,
        refreshIntervalMs: REFRESH_MS,
        backupPath: dir,
        logger: recordingLogger(logs),
      });
    }

    before(async function () {
      fake = createServer((_req: IncomingMessage, res: ServerResponse) => respond(res));
      fake.listen(0, '127.0.0.1');
      await once(fake, 'listening');
    });

    after(async function () {
      for (const res of held) res.destroy();
      fake.closeAllConnections();
      await new Promise((resolve) => fake.close(resolve));
    });

    it('counts a 503 answer as unreachable', async function () {
      respond = (res) => res.writeHead(503, { Connection: 'close' }).end();
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      const flag = fakeFlag('switchboard-503-test', [], dir);
      try {
        await waitUntil('the 503 to be reported', () => flag.status().lastError !== undefined, A_MINUTE);
        expect(flag.status()).to.include({ reachable: false, hasState: false });
        expect(flag.status().lastError).to.include('503');
      } finally {
        await flag.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('never logs or reports a password given in UNLEASH_URL', async function () {
      respond = (res) => res.writeHead(503, { Connection: 'close' }).end();
      const { port } = fake.address() as AddressInfo;
      const password = `pw-${randomBytes(6).toString('hex')}`;
      const logs: LogEntry[] = [];
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      const flag = new UnleashBackendFlag({ url: `http://switchboard:${password}@127.0.0.1:${port}/api`, token: 'default:development.not-a-real-token', appName: 'switchboard-url-password', refreshIntervalMs: REFRESH_MS, backupPath: dir, logger: recordingLogger(logs) });
      try {
        await waitUntil('the failure to be reported', () => flag.status().lastError !== undefined, A_MINUTE);
        expect(logs.length).to.be.greaterThan(0);
        expect(flag.status().lastError).to.include('switchboard:…@127.0.0.1', 'the URL, its password masked');
        expect(JSON.stringify([logs, flag.status()])).not.to.include(password);
      } finally {
        await flag.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    /** A client features answer: the flag on for everyone, with one variant. */
    const FEATURES = JSON.stringify({
      version: 2,
      features: [{ name: 'session-storage', enabled: true, strategies: [{ name: 'default', parameters: {} }], variants: [{ name: 'redis', weight: 1000, stickiness: 'default' }] }],
    });

    it('polls again after the server refused the token, and follows the flag once it accepts it (without a restart)', async function () {
      // unleash-client stops polling for good on a 401/403; a refusal is often passing (a
      // token cache, a proxy restarting), and the rollout an operator then changes was ignored
      // until every instance was restarted.
      let polls = 0;
      respond = (res) => {
        polls++;
        if (polls === 1) res.writeHead(403, { Connection: 'close' }).end();
        else res.writeHead(200, { 'Content-Type': 'application/json', Connection: 'close' }).end(FEATURES);
      };
      const logs: LogEntry[] = [];
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      const flag = fakeFlag('switchboard-refused-once', logs, dir);
      try {
        await waitUntil('the refusal', () => flag.status().lastError !== undefined, A_MINUTE);
        expect(flag.status().lastError).to.match(/403/);
        // Ten refresh intervals (5 s here) after the refusal.
        await waitUntil('the flag from the server that now accepts the token', () => flag.backendFor('anyone') === 'redis', 600);
        expect(flag.status()).to.include({ reachable: true, hasState: true });
        expect(flag.status().lastError).to.equal(undefined);
      } finally {
        await flag.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('a backup it cannot write is said once, and the server still counts as reachable', async function () {
      // Every answer a 200 without an ETag (a proxy that drops them): every poll writes the
      // backup. Each failed write flipped the status to unreachable and logged two lines.
      let polls = 0;
      respond = (res) => {
        polls++;
        res.writeHead(200, { 'Content-Type': 'application/json', Connection: 'close' }).end(FEATURES);
      };
      const logs: LogEntry[] = [];
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      const notADirectory = path.join(dir, 'backup');
      writeFileSync(notADirectory, 'a file where the backup directory should be');
      const flag = fakeFlag('switchboard-backup-test', logs, notADirectory);
      try {
        await waitUntil('four polls', () => polls >= 4, A_MINUTE);
        await waitUntil('the answer to the last', () => flag.status().reachable, A_MINUTE);
        expect(flag.status().lastError).to.equal(undefined);
        expect(flag.backendFor('anyone')).to.equal('redis');
        expect(logs.filter((e) => e.msg.startsWith('Unleash backup not written')), 'said once').to.have.length(1);
        expect(logs.filter((e) => e.msg === 'Unleash unreachable or failing'), 'not taken for the server failing').to.deep.equal([]);
      } finally {
        await flag.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('counts connections reset on every poll as unreachable, said once', async function () {
      respond = (res) => res.socket?.destroy();
      const logs: LogEntry[] = [];
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      const flag = fakeFlag('switchboard-reset-test', logs, dir);
      try {
        await waitUntil('two resets', () => logs.filter((e) => /Socket keep alive error/.test(JSON.stringify(e.obj))).length >= 1 && flag.status().lastError !== undefined, A_MINUTE);
        await new Promise((resolve) => setTimeout(resolve, 2 * REFRESH_MS + 1000));
        expect(flag.status()).to.include({ reachable: false });
        expect(flag.status().lastError).to.match(/Socket keep alive error/);
        expect(logs.filter((e) => e.level === 'warn'), 'one line for the whole episode').to.have.length(1);
      } finally {
        await flag.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('says once that the flag is gone from Unleash (archived, deleted), and once that it is back', async function () {
      let features = FEATURES;
      respond = (res) => res.writeHead(200, { 'Content-Type': 'application/json', Connection: 'close' }).end(features);
      const logs: LogEntry[] = [];
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      const flag = fakeFlag('switchboard-flag-gone', logs, dir);
      const said = (start: string) => logs.filter((e) => e.msg.startsWith(start));
      try {
        await waitUntil('the flag', () => flag.backendFor('anyone') === 'redis', A_MINUTE);
        features = JSON.stringify({ version: 2, features: [] });
        await waitUntil('the flag gone', () => flag.backendFor('anyone') === undefined, A_MINUTE);
        await new Promise((resolve) => setTimeout(resolve, 3 * REFRESH_MS));
        expect(said('Unleash no longer has the session-storage flag'), 'said once').to.have.length(1);
        expect(said('Unleash no longer has the session-storage flag')[0]!.level).to.equal('warn');
        features = FEATURES;
        await waitUntil('the flag back', () => flag.backendFor('anyone') === 'redis', A_MINUTE);
        expect(said('Unleash has the session-storage flag again')).to.have.length(1);
      } finally {
        await flag.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('survives a poll that fails after close', async function () {
      respond = (res) => {
        held.push(res);
        fake.emit('held');
      };
      const logs: LogEntry[] = [];
      const rejections: unknown[] = [];
      const onRejection = (reason: unknown) => rejections.push(reason);
      process.on('unhandledRejection', onRejection);
      const dir = mkdtempSync(path.join(tmpdir(), 'unleash-flag-'));
      try {
        const flag = fakeFlag('switchboard-close-test', logs, dir);
        await once(fake, 'held');
        await flag.close();
        await flag.close();
        // An unexpected status makes the SDK emit 'error' from its repository, whose
        // listeners destroy() removed: without the listener close() adds, this would be an
        // unhandled rejection.
        held.shift()!.writeHead(418, { Connection: 'close' }).end();
        const reported = () => logs.some((e) => e.msg === 'Unleash poll failed after close');
        await waitUntil('the failed poll to end', () => reported() || rejections.length > 0, A_MINUTE);
        expect(rejections.map(String)).to.deep.equal([]);
        expect(reported()).to.equal(true);
        expect(flag.backendFor('anyone')).to.equal(undefined);
      } finally {
        process.removeListener('unhandledRejection', onRejection);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
