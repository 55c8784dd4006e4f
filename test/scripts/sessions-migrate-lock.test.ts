/**
 * Two copies of `sessions:migrate` at once, as two operators (or a cron job and an operator)
 * start them: the second stops at once with one line (exit 75), and a copy killed -9 does not
 * block later runs for good. Real processes, on SQLite and on PostgreSQL.
 *
 * A lock's age is set here rather than waited for (its directory's mtime, which the holder renews):
 * fresh while the first copy is held stopped, then older than LOCK_STALE_MS once it is killed.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOCK_STALE_MS } from '../../scripts/cli.js';
import type { Core } from '../../src/core.js';
import { makeScratchDir } from '../support/child-process.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { makeRecord } from '../sessions/fixtures.js';
import { closeScriptCore, openScriptCore } from './script-core.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const ARGS = ['--import', 'tsx', 'scripts/sessions-migrate.ts', '--from', 'redis', '--to', 'database', '--batch', '1'];

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`sessions:migrate run twice at once (${dialect})`, function () {
    this.timeout(120_000);
    let dir: string;
    let db: TestDatabase | undefined;
    let env: Record<string, string>;
    let core: Core;
    const prefix = `migrate-lock-${randomBytes(4).toString('hex')}:`;
    const sessions = 300;
    const run = () => spawnSync(process.execPath, ARGS, { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 60_000 });

    before(async () => {
      dir = makeScratchDir('switchboard-migrate-lock-');
      if (dialect === 'postgres') db = await createTestDatabase('migrate_lock');
      const databaseUrl = db?.url ?? `sqlite:${path.join(dir, 'db.sqlite')}`;
      env = { DATA_DIR: dir, DATABASE_URL: databaseUrl, REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: prefix, SESSION_STORAGE: 'redis', STORE_TIMEOUT_MS: '1000' };
      core = await openScriptCore(env);
      for (let i = 0; i < sessions; i++) await core.backends.create(makeRecord({}, 'redis'), 'redis');
    });
    after(async () => {
      await closeScriptCore(core, prefix);
      await db?.drop();
    });

    it('refuses a second copy at once with one line naming the first (exit 75); a copy killed -9 stops blocking once its lock is stale', async () => {
      const cursor = path.join(dir, 'sessions-migrate-redis-to-database.cursor');
      const lock = `${cursor}.lock`;
      const first = spawn(process.execPath, ARGS, { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, stdio: 'ignore' });
      const exited = new Promise<void>((resolve) => first.once('exit', () => resolve()));
      try {
        // Under way (a position saved), then held there: a copy that runs but makes no progress.
        for (let waited = 0; !existsSync(cursor); waited += 20) {
          if (waited > 60_000 || first.exitCode !== null) throw new Error(`the first copy did not get under way (exit ${first.exitCode})`);
          await sleep(20);
        }
        first.kill('SIGSTOP');
        const now = new Date();
        utimesSync(lock, now, now); // just renewed, as a running copy's is

        const second = run();
        expect(second.status, second.stderr).to.equal(75);
        expect(second.stderr.trim().split('\n')).to.have.lengthOf(1);
        expect(second.stderr).to.match(new RegExp(`^sessions:migrate --from redis --to database: another copy is running \\(pid ${first.pid} on .+, since .+\\); wait for it to finish or stop it`));
        expect(second.stdout, 'refused before it counted anything').to.equal('');
      } finally {
        first.kill('SIGKILL');
        await exited;
      }
      expect(existsSync(lock), 'a killed copy leaves its lock').to.equal(true);
      expect(run().status, 'still held right after the kill').to.equal(75);

      const stale = new Date(Date.now() - 2 * LOCK_STALE_MS);
      utimesSync(lock, stale, stale); // not renewed for twice the stale time
      const next = run();
      expect(next.status, next.stderr).to.equal(0);
      expect(next.stdout).to.include('(resuming)');
      expect(await core.raw.database.countHeldBy('redis')).to.equal(0);
      expect(await core.raw.database.countHeldBy('database')).to.equal(sessions);
      expect(existsSync(lock), 'released at the end').to.equal(false);
      expect(existsSync(`${cursor}.owner`), 'and who held it forgotten').to.equal(false);
    });

    it('stops with one line naming DATA_DIR when the lock cannot be taken (a file of its name left there)', () => {
      const lock = path.join(dir, 'sessions-migrate-redis-to-database.cursor.lock');
      writeFileSync(lock, 'not a lock');
      const old = new Date(Date.now() - 2 * LOCK_STALE_MS);
      utimesSync(lock, old, old);
      try {
        const refused = run();
        expect(refused.status, refused.stderr).to.equal(1);
        expect(refused.stderr).to.match(/^sessions:migrate --from redis --to database: DATA_DIR: cannot take the lock .+\.cursor\.lock \(ENOTDIR\); DATA_DIR must be writable, and a file of that name removed\n$/);
      } finally {
        rmSync(lock, { force: true });
      }
    });

    it('does not resume from a position another database left in DATA_DIR (it skipped the sessions before it)', async () => {
      for (let i = 0; i < 20; i++) await core.backends.create(makeRecord({}, 'redis'), 'redis');
      const cursor = path.join(dir, 'sessions-migrate-redis-to-database.cursor');
      // An interrupted run against another DATABASE_URL with this DATA_DIR, far along its sessions.
      writeFileSync(cursor, JSON.stringify({ deployment: 'another-database', position: 'f'.repeat(64) }));
      const next = run();
      expect(next.status, next.stderr).to.equal(0);
      expect(next.stdout).to.not.include('(resuming)');
      expect(next.stdout).to.include('moved 20 sessions');
      expect(await core.raw.database.countHeldBy('redis'), 'none left in the source').to.equal(0);
    });
  });
}
