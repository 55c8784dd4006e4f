/**
 * The operator scripts as an operator calls them: a mistyped option (or `npm run x --batch 100`,
 * where npm eats the `--`) stops with one line and how to call the script, never a stack trace.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { startApp } from '../support/app-server.js';
import { makeScratchDir } from '../support/child-process.js';
import { Client } from '../support/http-client.js';
import { createTestDatabase } from '../support/postgres.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** `clockAheadMs`: the script runs on a machine whose clock is that far ahead. */
function run(script: string, args: string[], env: Record<string, string> = {}, clockAheadMs = 0) {
  const dir = makeScratchDir('switchboard-scripts-');
  const clock = clockAheadMs ? ['--import', './test/support/clock-ahead.mjs'] : [];
  const result = spawnSync(process.execPath, ['--import', 'tsx', ...clock, `scripts/${script}.ts`, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'none', CLOCK_AHEAD_MS: String(clockAheadMs), ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('the operator scripts on the command line', function () {
  this.timeout(120_000);

  for (const [script, args, problem] of [
    ['sessions-cleanup', ['--frob'], /^Unknown option '--frob'/],
    ['sessions-cleanup', ['100'], /^Unexpected argument '100'/],
    ['sessions-cleanup', ['--keep-events-days', '90d'], /^--keep-events-days must be a whole number of days, 0 to keep every audit row \(got "90d"\)/],
    ['sessions-migrate', ['--from', 'redis', '--frob'], /^Unknown option '--frob'/],
    ['sessions-migrate', [], /^--from is required/],
    ['sessions-migrate', ['--from', 'redis'], /^--to is required/],
    ['sessions-migrate', ['--from', 'floppy', '--to', 'database'], /^--from must be database or redis \(got "floppy"\)/],
    ['sessions-migrate', ['--from', 'cookie', '--to', 'database'], /^--from cookie: cookie sessions live in browsers/],
    ['sessions-migrate', ['--from', 'redis', '--to', 'redis'], /^--from and --to must differ/],
    ['sessions-migrate', ['--from', 'redis', '--to', 'database', '--batch', '0'], /^--batch must be a positive whole number/],
    ['sessions-cleanup', ['--batch', '0'], /^--batch must be a positive whole number/],
  ] as const) {
    it(`${script} ${args.join(' ')}: one line, then how to call it (exit 2)`, () => {
      const { status, stderr } = run(script, [...args]);
      expect(status).to.equal(2);
      const lines = stderr.trim().split('\n');
      expect(lines[0]).to.match(problem);
      expect(stderr).to.include(`npm run sessions:${script.replace('sessions-', '')}`);
      expect(stderr).to.not.match(/\n\s+at /, 'no stack trace');
    });
  }

  it('migrate down: reverting the settings table (cookie sessions logged out) asks for --yes first, saying why', () => {
    const dir = makeScratchDir('switchboard-migrate-');
    const env = { DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}` };
    expect(run('migrate', ['up'], env).status).to.equal(0);
    const refused = run('migrate', ['down'], env);
    expect(refused.status).to.equal(2);
    expect(refused.stderr.trim().split('\n')).to.have.length(1);
    expect(refused.stderr).to.match(/^migrate:down: reverting 003-settings drops the deployment id: every cookie-backend session is logged out/);
    expect(refused.stderr).to.include('npm run migrate:down -- --yes');
    const confirmed = run('migrate', ['down', '--yes'], env);
    expect(confirmed.status, confirmed.stderr).to.equal(0);
    expect(confirmed.stdout.trim()).to.equal('reverted: 003-settings');
    expect(run('migrate', ['down'], env).stderr, 'and the one before').to.match(/^migrate:down: reverting 002-revocations-and-flags drops the revocations/);
  });

  it('sessions-cleanup -- --batch 100 runs', () => {
    const { status, stdout } = run('sessions-cleanup', ['--batch', '100'], migratedDatabase());
    expect(status).to.equal(0);
    expect(stdout).to.match(/^deleted 0 expired sessions, 0 stale revocation entries and 0 audit rows older than 90 days/);
  });

  it('sessions-cleanup run from a machine whose clock is 3 hours fast deletes no live session, and says the clocks disagree', async () => {
    const db = await createTestDatabase('cleanup_clock');
    const app = await startApp({ DATABASE_URL: db.url, SESSION_STORAGE: 'database', REDIS_URL: 'none' });
    try {
      const user = new Client(app.url);
      await user.signup();
      const { status, stdout, stderr } = run('sessions-cleanup', [], { DATABASE_URL: db.url }, 3 * 3_600_000);
      expect(status, stderr).to.equal(0);
      expect(stdout).to.match(/^deleted 0 expired sessions/);
      expect(stderr).to.match(/^sessions:cleanup: this machine's clock is 108\d\d s ahead of the database's; the database's is used/);
      expect((await user.get('/api/session')).status, 'the live session').to.equal(200);
    } finally {
      await app.stop();
      await db.drop();
    }
  });

  /** A SQLite database with this release's schema, as the scripts ask for. */
  function migratedDatabase(): { DATABASE_URL: string } {
    const env = { DATABASE_URL: `sqlite:${path.join(makeScratchDir('switchboard-scripts-db-'), 'db.sqlite')}` };
    expect(run('migrate', ['up'], env).status).to.equal(0);
    return env;
  }

  it('sessions-migrate: a Redis it cannot reach stops it with one line naming REDIS_URL and no password (exit 1)', () => {
    const { status, stdout, stderr } = run('sessions-migrate', ['--from', 'redis', '--to', 'database'], { ...migratedDatabase(), REDIS_URL: 'redis://:SuperSecretPw9@127.0.0.1:1/0' });
    expect(status).to.equal(1);
    expect(stdout, 'nothing counted, nothing logged').to.equal('');
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).to.have.length(1);
    expect(lines[0]).to.equal('sessions:migrate: REDIS_URL: cannot reach Redis at 127.0.0.1:1 (no connection)');
    expect(stderr).to.not.include('SuperSecretPw9');
  });

  it('sessions-migrate: with REDIS_SENTINELS, names the Sentinels it asked, not REDIS_URL\'s host, which is not used', () => {
    const { status, stderr } = run('sessions-migrate', ['--from', 'redis', '--to', 'database'], { ...migratedDatabase(), REDIS_URL: 'redis://:SuperSecretPw9@10.0.0.9:6379/0', REDIS_SENTINELS: '127.0.0.1:1', REDIS_SENTINEL_NAME: 'sessions' });
    expect(status).to.equal(1);
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).to.have.length(1);
    expect(lines[0]).to.equal('sessions:migrate: REDIS_SENTINELS: cannot reach the master "sessions" through 127.0.0.1:1 (no connection)');
    expect(stderr).to.not.include('SuperSecretPw9');
  });

  it('migrate up: a database it cannot reach stops it with one line naming DATABASE_URL and no password (exit 1)', () => {
    const { status, stderr } = run('migrate', ['up'], { DATABASE_URL: 'postgres://app:SuperSecretPw9@127.0.0.1:1/nope' });
    expect(status).to.equal(1);
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).to.have.length(1);
    expect(lines[0]).to.match(/^migrate: DATABASE_URL: cannot connect to PostgreSQL/);
    expect(stderr).to.not.include('SuperSecretPw9');
  });

  it('migrate up: three copies at once on a new PostgreSQL database all succeed (they take turns)', async () => {
    const db = await createTestDatabase('migrate_race');
    try {
      const once = () =>
        new Promise<{ status: number | null; stderr: string }>((resolve) => {
          const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts', 'up'], {
            cwd: ROOT,
            env: { PATH: process.env.PATH, DATA_DIR: makeScratchDir('switchboard-scripts-'), DATABASE_URL: db.url, REDIS_URL: 'none' },
          });
          let stderr = '';
          child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          child.on('close', (status) => resolve({ status, stderr }));
        });
      const results = await Promise.all([once(), once(), once()]);
      for (const { status, stderr } of results) expect(status, stderr).to.equal(0);
    } finally {
      await db.drop();
    }
  });

  for (const script of ['sessions-cleanup', 'sessions-migrate']) {
    it(`${script}: a database it cannot reach stops it with one line naming DATABASE_URL and no password (exit 1)`, () => {
      const args = script === 'sessions-migrate' ? ['--from', 'redis', '--to', 'database'] : [];
      const { status, stderr } = run(script, args, { DATABASE_URL: 'postgres://app:SuperSecretPw9@127.0.0.1:1/nope' });
      expect(status).to.equal(1);
      const lines = stderr.trim().split('\n');
      expect(lines, stderr).to.have.length(1);
      expect(lines[0]).to.match(/DATABASE_URL: cannot connect to PostgreSQL/);
      expect(stderr).to.not.include('SuperSecretPw9');
    });
  }
});
