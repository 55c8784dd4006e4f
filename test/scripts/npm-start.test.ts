/**
 * `npm start` as README runs it, stopped as a container runtime or a supervisor stops it: SIGTERM
 * to npm, the process it started. npm passes the signal on to its script's shell; a shell running
 * `build && node …` died of it and left the server running, orphaned, never drained (no
 * `shutting down`, copies written behind not flushed) until something killed it outright. The
 * script now `exec`s the server, so the signal reaches it and it stops as when signalled itself.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../support/ports.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm start, stopped by SIGTERM to npm', function () {
  // npm start builds first (tsc): slow on a loaded machine.
  this.timeout(240_000);
  let dataDir: string;
  let serverPid: number | undefined;
  before(() => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'switchboard-npm-start-'));
  });
  after(() => {
    // Left running by a failed test: not left behind.
    if (serverPid !== undefined && running(serverPid)) process.kill(serverPid, 'SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('stops the server, which drains and exits, and npm exits 0', async () => {
    const port = await freePort();
    const npm = spawn('npm', ['start'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dataDir, REDIS_URL: 'none', SHUTDOWN_DELAY_MS: '0', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    npm.stdout.on('data', (d: Buffer) => (out += d.toString()));
    npm.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => npm.once('exit', (code, signal) => resolve({ code, signal })));
    // Bounded against a hang only: the build and start take what the machine gives them.
    for (let i = 0; i < 1800 && serverPid === undefined; i++) {
      const listening = /"pid":(\d+)[^\n]*switchboard listening/.exec(out);
      if (listening) serverPid = Number(listening[1]);
      else await new Promise((r) => setTimeout(r, 100));
    }
    expect(serverPid, `the server started:\n${out}`).to.be.a('number');
    expect(serverPid).to.not.equal(npm.pid, 'the server is a process of its own, below npm');
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).to.equal(200);

    npm.kill('SIGTERM');
    const exit = await exited;
    // npm waits for its script to end before it exits: the server has stopped by now.
    expect(running(serverPid!), `the server (pid ${serverPid}) still runs after npm exited:\n${out}`).to.equal(false);
    expect(out).to.contain('"msg":"shutting down"');
    expect(out).to.contain('"msg":"stopped"');
    expect(exit).to.deep.equal({ code: 0, signal: null });
    const refused = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      () => false,
      () => true,
    );
    expect(refused, 'nothing answers on the port').to.equal(true);
  });
});
