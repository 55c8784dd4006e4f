/**
 * SIGTERM under keep-alive traffic (a rolling restart): requests in flight get their answers,
 * and the clients' connections close after at most one more answer each, so the instance can
 * finish instead of serving its old connections until it is killed mid-request.
 */
import { expect } from 'chai';
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
    app = await startApp({ SESSION_STORAGE: 'database' });
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
