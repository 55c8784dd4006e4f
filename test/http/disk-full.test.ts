/**
 * The disk under the embedded SQLite database fills up (the default `npm start`). Nobody is
 * logged out and nothing answered 200 is lost; reads are still served — a touch that cannot be
 * written is skipped, not a 503 for every signed-in page; /readyz and session_store_up say the
 * database is down (its probe writes: a SELECT answered while every write failed); an admin's
 * disabling still ends the user's sessions; and it all comes back once there is room, without a
 * restart. A login made meanwhile under the cookie backend is listed, and can be logged out.
 * Start-up on a full disk says so. The disk is a small tmpfs the test mounts (root only; skipped otherwise).
 */
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { waitUntil } from '../support/redis-server.js';
import { sample } from '../switching/metrics-text.js';
import { ADMIN_TOKEN, GOOD_PASSWORD, redisEnv } from './helpers.js';

const bearer = { Authorization: `Bearer ${ADMIN_TOKEN}` };

describe('the disk under the SQLite database full', function () {
  this.timeout(120_000);
  let disk: string;
  let mounted = false;
  let app: AppProcess;
  const filler = () => path.join(disk, 'filler');

  before(async function () {
    disk = mkdtempSync(path.join(tmpdir(), 'switchboard-disk-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', disk], { stdio: 'pipe' });
      mounted = true;
    } catch (err) {
      console.log(`      (skipped: cannot mount a tmpfs here: ${String((err as Error).message).split('\n')[0]})`);
      this.skip();
    }
    // Touches due at once (after a second), so that every read of a signed-in user wants a write.
    // Redis holds the revocations the database cannot take meanwhile (README, "Database outage").
    // Any failure the breaker counts opens it (BREAKER_FAILURE_THRESHOLD 1): a failed write
    // check must not be one, or reads would fail too.
    app = await startApp({ SESSION_STORAGE: 'database', ...redisEnv(), ADMIN_TOKEN, DATABASE_URL: `sqlite:${path.join(disk, 'switchboard.sqlite')}`, SESSION_TOUCH_INTERVAL: '1', BREAKER_FAILURE_THRESHOLD: '1' });
  });
  after(async () => {
    await app?.stop();
    if (mounted) execFileSync('umount', ['-l', disk]);
    rmSync(disk, { recursive: true, force: true });
  });

  /** Fills what is left of the disk, to the last block. */
  function fill() {
    const { bavail, bsize } = statfsSync(disk);
    writeFileSync(filler(), Buffer.alloc(0));
    for (const size of [Math.max(0, bavail * bsize - 65536), 65536, 4096, 512]) {
      try {
        for (;;) writeFileSync(filler(), Buffer.alloc(size), { flag: 'a' });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      }
    }
  }

  const metric = async (name: string, labels: Record<string, string>) => sample((await new Client(app.url).get('/metrics')).text, name, labels);

  it('serves reads, says the database is down, still ends a disabled user’s sessions, and recovers once there is room', async () => {
    const reader = new Client(app.url);
    await reader.signup();
    const disabled = new Client(app.url);
    const { user } = await disabled.signup();
    expect((await reader.patch('/api/session', { preferences: { theme: 'dark' } })).status).to.equal(200);

    fill();
    try {
      // Writes fail once SQLite needs a page it cannot have (its WAL may hold a few more first).
      let n = 0;
      await waitUntil('a change refused for want of room', async () => (await reader.patch('/api/session', { preferences: { n: ++n } })).status === 503, 200);
      await new Promise((resolve) => setTimeout(resolve, 1100)); // a touch due again

      const read = await reader.get('/api/session');
      expect(read.status, read.text).to.equal(200);
      expect(read.json.preferences, 'what was answered 200 before').to.include({ theme: 'dark' });
      expect(await metric('session_store_operations_total', { backend: 'database', operation: 'touch', outcome: 'error' }), 'the touch was tried').to.be.above(0);

      await waitUntil('session_store_up{backend="database"} 0', async () => (await metric('session_store_up', { backend: 'database' })) === 0, 300);
      const ready = await new Client(app.url).get('/readyz');
      expect((ready.json.backends as Record<string, string>).database, ready.text).to.equal('down');
      expect([ready.status, ready.json.status], 'reads are served: degraded, not taken out of the load balancer').to.deep.equal([200, 'degraded']);
      const again = await reader.get('/api/session');
      expect(again.status, `a read once the probe has failed: ${again.text}`).to.equal(200);

      const disabling = await new Client(app.url).request('PATCH', `/api/admin/users/${user.id}`, { active: false }, bearer);
      expect(disabling.status, disabling.text).to.equal(503);
      expect((await disabled.get('/api/session')).status, 'the disabled user’s session').to.equal(401);
    } finally {
      rmSync(filler());
    }

    await waitUntil('session_store_up{backend="database"} 1', async () => (await metric('session_store_up', { backend: 'database' })) === 1, 300);
    const change = await reader.patch('/api/session', { preferences: { theme: 'light' } });
    expect(change.status, change.text).to.equal(200);
    expect((await reader.get('/api/session')).json.preferences).to.include({ theme: 'light' });
    const disabling = await new Client(app.url).request('PATCH', `/api/admin/users/${user.id}`, { active: false }, bearer);
    expect(disabling.status, disabling.text).to.equal(200);

    // The outage's log lines say what failed, and no stack each (they were many).
    const lines = app.output().split('\n').filter((line) => line.includes('SQLITE_FULL'));
    expect(lines.length, 'log lines naming the full disk').to.be.above(0);
    for (const line of lines) expect(line, 'an outage log line').not.to.include('"stack"');
  });

  it('lists a login made while the disk was full (cookie backend), and “log out my other sessions” ends it', async () => {
    const cookieApp = await startApp({ SESSION_STORAGE: 'cookie', ...redisEnv(), DATABASE_URL: `sqlite:${path.join(disk, 'cookie.sqlite')}` });
    try {
      const first = new Client(cookieApp.url);
      const { email } = await first.signup();
      fill();
      try {
        const databaseUp = async () => sample((await new Client(cookieApp.url).get('/metrics')).text, 'session_store_up', { backend: 'database' });
        await waitUntil('session_store_up{backend="database"} 0', async () => (await databaseUp()) === 0, 300);
        const second = new Client(cookieApp.url);
        const login = await second.login(email, GOOD_PASSWORD);
        expect(login.status, login.text).to.equal(200);

        const listed = await first.get('/api/sessions');
        expect((listed.json.sessions as unknown[]).length, listed.text).to.equal(2);
        const revoked = await first.post('/api/sessions/revoke-others');
        expect(revoked.json, revoked.text).to.deep.equal({ revoked: 1 });
        expect((await second.get('/api/session')).status, 'the other session').to.equal(401);
        expect((await first.get('/api/session')).status, 'this one').to.equal(200);
      } finally {
        rmSync(filler());
      }
    } finally {
      await cookieApp.stop();
    }
  });

  it('stops `npm start` with one line that says the disk is full, not only "disk I/O error"', function () {
    fill();
    try {
      const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
        cwd: path.resolve(import.meta.dirname, '../..'),
        env: { PATH: process.env.PATH, DATA_DIR: app.dataDir, PORT: '0', DATABASE_URL: `sqlite:${path.join(disk, 'new.sqlite')}` },
        encoding: 'utf8',
        timeout: 60_000,
      });
      const lines = run.stderr.trim().split('\n');
      expect(run.status, run.stderr).to.equal(1);
      expect(lines).to.have.length(1);
      expect(lines[0]).to.match(/DATABASE_URL: cannot open the SQLite file .*new\.sqlite .*the disk holding it is full/);
    } finally {
      rmSync(filler());
    }
  });
});
