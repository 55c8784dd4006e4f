/**
 * One client pipelining thousands of requests on a few connections, and not reading the answers:
 * its requests run a few at a time, per connection, and the connection is not read further
 * while they wait — so other users are served meanwhile, and the process does not go on working
 * (and holding answers in memory) for a client that takes none of them. Once it reads, it gets
 * every answer, in order. /metrics is the request: it needs no login, and its answers (tens of
 * kB) fill the connection's buffers after a hundred or so.
 */
import { expect } from 'chai';
import { connect, type Socket } from 'node:net';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { waitUntil } from '../support/redis-server.js';
import { sample } from '../switching/metrics-text.js';

const CONNECTIONS = 4;
const REQUESTS_EACH = 1000;

describe('a client pipelining thousands of requests without reading the answers', function () {
  this.timeout(120_000);
  let app: AppProcess;
  before(async () => {
    app = await startApp({ SESSION_STORAGE: 'database', REDIS_URL: 'none' });
  });
  after(async () => {
    await app?.stop();
  });

  /** How many /metrics requests have been answered (this one not yet counted). */
  const scrapes = async () => sample((await new Client(app.url).get('/metrics')).text, 'http_request_duration_seconds_count', { method: 'GET', route: '/metrics', status: '200' });

  it('runs only a few of them while it does not read, serves others meanwhile, and answers all in order once it reads', async () => {
    const other = new Client(app.url);
    await other.signup();
    const before = await scrapes();

    const request = `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < CONNECTIONS; i++) {
        const socket = connect(app.port, '127.0.0.1');
        socket.pause(); // the answers are not read
        socket.on('error', () => undefined);
        await new Promise<void>((resolve) => socket.once('connect', resolve));
        socket.write(request.repeat(REQUESTS_EACH));
        sockets.push(socket);
      }
      // Each scrape counts itself too: `checks` of them are not the flood's.
      let checks = 0;
      // Some of the flood has run (a few at a time per connection), and then it stops: the
      // answers it has are not taken. Three times in a row the count must stand still.
      let last = -1;
      let still = 0;
      await waitUntil('the flood to stop running', async () => {
        const now = (await scrapes()) - ++checks;
        still = now === last ? still + 1 : 0;
        last = now;
        return still >= 3;
      }, 400);
      // Another user, meanwhile: answered.
      const res = await other.get('/api/session');
      expect(res.status, res.text).to.equal(200);
      const ran = (await scrapes()) - ++checks - before;
      expect(ran, 'the flood’s requests run before it read any answer').to.be.below(CONNECTIONS * REQUESTS_EACH / 4);

      // Now it reads: every request is answered.
      const answered = await Promise.all(sockets.map((socket) => countAnswers(socket, REQUESTS_EACH)));
      expect(answered).to.deep.equal(sockets.map(() => REQUESTS_EACH));
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });
});

/** Reads `socket` until `expected` answers have come; how many were 200. */
function countAnswers(socket: Socket, expected: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    let answers = 0;
    let ok = 0;
    const timer = setTimeout(() => reject(new Error(`only ${answers} of ${expected} answers came`)), 90_000);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      // Each answer: a status line, headers, and a body of Content-Length bytes.
      for (;;) {
        const headEnd = text.indexOf('\r\n\r\n');
        if (headEnd < 0) break;
        const head = text.slice(0, headEnd);
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (text.length < headEnd + 4 + length) break;
        answers++;
        if (head.startsWith('HTTP/1.1 200')) ok++;
        text = text.slice(headEnd + 4 + length);
      }
      if (answers >= expected) {
        clearTimeout(timer);
        resolve(ok);
      }
    });
    socket.resume();
  });
}
