/**
 * SIGTERM under keep-alive traffic (a rolling restart): requests in flight get their answers,
 * and the clients' connections close after at most one more answer each, so the instance can
 * finish instead of serving its old connections until it is killed mid-request. For
 * SHUTDOWN_DELAY_MS first, it goes on serving while /readyz tells load balancers it is draining.
 */
import { expect } from 'chai';
import http from 'node:http';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';

interface Outcome {
  status?: number;
  error?: string;
  afterStop: boolean;
}

describe('stopping under keep-alive traffic (SIGTERM)', function () {
  this.timeout(60_000);
  let app: AppProcess;
  before(async () => {
    // No delay: the load balancer has already taken the instance out.
    app = await startApp({ SESSION_STORAGE: 'database', SHUTDOWN_DELAY_MS: '0' });
  });
  after(() => app?.stop());

  it('answers what is in flight, closes the connections, and exits', async () => {
    const clients = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const c = new Client(app.url);
        await c.signup();
        return c;
      }),
    );
    let stopping = false;
    const outcomes: Outcome[] = [];
    const loops = clients.map(async (c, k) => {
      for (let i = 0; ; i++) {
        const afterStop = stopping;
        try {
          const res = await c.patch('/api/session', { preferences: { counter: i } });
          outcomes.push({ status: res.status, afterStop });
        } catch (err) {
          const cause = (err as { cause?: { code?: string } }).cause;
          outcomes.push({ error: cause?.code ?? String(err), afterStop });
          if (cause?.code === 'ECONNREFUSED') return; // the instance is gone: the client goes elsewhere
        }
        if (outcomes.length > 5000) throw new Error(`client ${k}: still served long after SIGTERM`);
      }
    });
    await new Promise((r) => setTimeout(r, 500));
    stopping = true;
    await app.stop();
    await Promise.all(loops);
    expect(app.lastExit(), 'exited by itself, having closed its stores').to.deep.equal({ code: 0, signal: null });

    const before = outcomes.filter((o) => !o.afterStop);
    expect(before.length).to.be.greaterThan(0);
    expect(before.filter((o) => o.status !== 200), 'requests sent before SIGTERM').to.deep.equal([]);
    const after = outcomes.filter((o) => o.afterStop && o.status !== undefined);
    // At most the request each client had in flight and one more on its connection (which says Connection: close).
    expect(after.length, 'requests still served after SIGTERM').to.be.at.most(clients.length * 2);
    expect(after.filter((o) => o.status !== 200)).to.deep.equal([]);
  });
});

/** One GET through `agent`, saying whether it went on a connection already used. */
function get(agent: http.Agent | false, url: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string; connection?: string; reused: boolean }>((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection, reused: req.reusedSocket }));
    });
    req.on('error', reject);
  });
}

describe('stopping with SHUTDOWN_DELAY_MS (behind a load balancer)', function () {
  this.timeout(90_000);
  let app: AppProcess;
  before(async () => {
    // Long enough for the steps below on a slow machine; the instance stops by itself after it.
    app = await startApp({ SESSION_STORAGE: 'database', SHUTDOWN_DELAY_MS: '10000', LOG_LEVEL: 'info' });
  });
  after(() => app?.stop());

  it('says draining on /readyz and answers a keep-alive connection idle at SIGTERM, with Connection: close', async () => {
    const user = new Client(app.url);
    await user.signup();
    const cookie = `sid=${user.sessionCookie()!}`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect((await get(agent, `${app.url}/api/session`, { cookie })).status).to.equal(200);
      const exited = app.terminate();
      // Fresh connections: the signal has been handled once /readyz says so.
      let ready = await get(false, `${app.url}/readyz`);
      for (let i = 0; i < 400 && ready.status === 200; i++) {
        await new Promise((r) => setTimeout(r, 25));
        ready = await get(false, `${app.url}/readyz`);
      }
      expect(ready.status, ready.body).to.equal(503);
      expect(JSON.parse(ready.body)).to.include({ status: 'draining' });

      // The connection left idle before the signal is still there, and is closed by its answer.
      const later = await get(agent, `${app.url}/api/session`, { cookie });
      expect(later, 'the request on the idle keep-alive connection').to.include({ status: 200, reused: true, connection: 'close' });
      expect(JSON.parse(later.body).user, 'still logged in').to.be.an('object');

      expect(await exited).to.deep.equal({ code: 0, signal: null });
      expect(app.output()).to.match(/"msg":"shutting down"/).and.to.match(/"msg":"stopped"/);
    } finally {
      agent.destroy();
    }
  });
});
