/**
 * The operator scripts as an operator calls them: a mistyped option (or `npm run x --batch 100`,
 * where npm eats the `--`) stops with one line and how to call the script, never a stack trace.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

function run(script: string, args: string[]) {
  const dir = mkdtempSync(path.join(tmpdir(), 'switchboard-scripts-'));
  const result = spawnSync(process.execPath, ['--import', 'tsx', `scripts/${script}.ts`, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, DATA_DIR: dir, DATABASE_URL: `sqlite:${path.join(dir, 'db.sqlite')}`, REDIS_URL: 'none' },
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
    ['sessions-migrate', ['--from', 'redis', '--frob'], /^Unknown option '--frob'/],
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

  it('sessions-cleanup -- --batch 100 runs', () => {
    const { status, stdout } = run('sessions-cleanup', ['--batch', '100']);
    expect(status).to.equal(0);
    expect(stdout).to.match(/^deleted 0 expired sessions and 0 stale revocation entries/);
  });
});
