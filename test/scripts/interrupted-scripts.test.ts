/**
 * The operator scripts as an incident meets them: run against a database whose schema is behind
 * (a `migrate:down`, a mistyped DATABASE_URL), and stopped halfway with Ctrl-C.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Op } from 'sequelize';
import type { Core } from '../../src/core.js';
import { makeScratchDir } from '../support/child-process.js';
import { makeRecord } from '../sessions/fixtures.js';
import { closeScriptCore, openScriptCore } from './script-core.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

function run(script: string, args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, ['--import', 'tsx', `scripts/${script}.ts`, ...args], { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/**
 * The script, sent SIGINT once `started` says it is under way: its exit code and output. A run
 * that ended by itself first fails the test (it would prove nothing).
 */
function interrupt(script: string, args: string[], env: Record<string, string>, started: () => Promise<boolean> | boolean) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `scripts/${script}.ts`, ...args], { cwd: ROOT, env: { PATH: process.env.PATH, ...env } });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const poll = setInterval(() => {
      void Promise.resolve(started()).then((yes) => {
        if (yes && !sent) {
          sent = true;
          child.kill('SIGINT');
        }
      }, reject);
    }, 20);
    const bound = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearInterval(poll);
      clearTimeout(bound);
      if (!sent) reject(new Error(`${script} ended (${code}) before it was interrupted: ${stderr}`));
      else resolve({ code, stdout, stderr });
    });
  });
}

describe('the operator scripts in an incident', function () {
  this.timeout(180_000);

  describe('on a database whose schema is behind this release', () => {
    let env: Record<string, string>;
    beforeEach(() => {
      const dir = makeScratchDir('switchboard-behind-');
      env = { DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'none' };
    });

    it('sessions:cleanup and sessions:migrate stop with one line and leave the schema as it was (an operator’s migrate:down holds)', () => {
      expect(run('migrate', ['up'], env).status).to.equal(0);
      expect(run('migrate', ['down', '--yes'], env).stdout.trim()).to.equal('reverted: 003-settings');
      for (const [script, name, args] of [
        ['sessions-cleanup', 'sessions:cleanup', []],
        ['sessions-migrate', 'sessions:migrate', ['--from', 'redis', '--to', 'database', '--dry-run']],
      ] as const) {
        const { status, stderr } = run(script, [...args], env);
        expect(status, stderr).to.equal(1);
        expect(stderr.trim().split('\n')).to.deep.equal([`${name}: DATABASE_URL: the database's schema is behind this release (not applied: 003-settings); run npm run migrate first`]);
      }
      expect(run('migrate', ['up'], env).stdout.trim(), 'still not applied').to.equal('applied: 003-settings');
    });

    it('sessions:cleanup puts no schema into a database never migrated (a mistyped DATABASE_URL)', () => {
      const { status, stderr } = run('sessions-cleanup', [], env);
      expect(status, stderr).to.equal(1);
      expect(stderr).to.match(/not applied: 001-initial, 002-revocations-and-flags, 003-settings\); run npm run migrate first\n$/);
      expect(run('migrate', ['up'], env).stdout.trim()).to.equal('applied: 001-initial, 002-revocations-and-flags, 003-settings');
    });
  });

  describe('stopped with Ctrl-C', () => {
    let dir: string;
    let env: Record<string, string>;
    let core: Core;
    const prefix = `interrupted-${randomBytes(4).toString('hex')}:`;
    before(async () => {
      dir = makeScratchDir('switchboard-interrupted-');
      env = { DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: prefix, SESSION_STORAGE: 'redis', STORE_TIMEOUT_MS: '1000' };
      core = await openScriptCore(env);
    });
    after(async () => {
      await closeScriptCore(core, prefix);
    });

    it('sessions:migrate says where it stopped, and the next run moves the rest: every session in the database, none left in Redis', async () => {
      const sessions = 1500;
      for (let i = 0; i < sessions; i++) await core.backends.create(makeRecord({}, 'redis'), 'redis');
      // Once it has saved a position (after its first batch).
      const cursor = path.join(dir, 'sessions-migrate-redis-to-database.cursor');
      const stopped = await interrupt('sessions-migrate', ['--from', 'redis', '--to', 'database', '--batch', '1'], env, () => existsSync(cursor));
      expect(stopped.code, stopped.stderr).to.equal(130);
      const [, moved] = /^sessions:migrate: interrupted after (\d+) sessions in this run; run it again to resume from there$/m.exec(stopped.stderr) ?? [];
      expect(Number(moved), stopped.stderr).to.be.below(sessions);

      const rest = run('sessions-migrate', ['--from', 'redis', '--to', 'database'], env);
      expect(rest.status, rest.stderr).to.equal(0);
      expect(rest.stdout).to.include('(resuming)');
      expect(await core.raw.database.countHeldBy('redis')).to.equal(0);
      expect(await core.raw.database.countHeldBy('database')).to.equal(sessions);
    });

    it('sessions:cleanup records the sessions it deleted before it was stopped in the audit trail', async () => {
      const expired = 1500;
      const past = Date.now() - 60_000;
      for (let i = 0; i < expired; i++) await core.raw.database.create(makeRecord({ lastActivity: past, expiresAt: past }));
      const left = () => core.models.SessionRow.count({ where: { expiresAt: { [Op.lte]: past } } });
      const stopped = await interrupt('sessions-cleanup', ['--batch', '1', '--keep-events-days', '0'], env, async () => (await left()) < expired);
      expect(stopped.code, stopped.stderr).to.equal(130);
      const deleted = expired - (await left());
      expect(deleted).to.be.above(0).and.below(expired);
      expect(stopped.stderr.trim()).to.equal(`sessions:cleanup: interrupted after deleting ${deleted} expired sessions; run it again for the rest`);
      const audit = await core.models.SessionEvent.findAll({ where: { type: 'expired', reason: 'cleanup' }, raw: true });
      expect(audit.map((row) => row.count)).to.deep.equal([deleted]);
    });
  });
});
