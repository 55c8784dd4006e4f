/**
 * HTTP/1.1 lets a client send requests on a connection without waiting for the answers
 * (pipelining), and Node starts a handler for every request it has parsed, all at once. One
 * client sending a few thousand on a handful of connections had them all running together: the
 * event loop busy for tens of seconds (every other user timed out), the heap grown by gigabytes,
 * and healthy backends judged slow — their deadlines passed while the loop was busy — so their
 * breakers opened. Answers leave a connection in order whatever happens, so running its requests
 * one at a time costs a pipelining client little: here at most `limit` run per connection,
 * the rest wait their turn, and a connection with many waiting is not read until they drain.
 * A client that does not read its answers stops its own connection's turns, not anyone else's.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Requests of one connection running at once. Browsers send one at a time, and so does wrk: one
 * here makes a pipelining connection cost what any other client costs. (At 4, a flood of 20
 * connections began with 80 requests at once, enough for a healthy Redis's deadline to pass.)
 */
export const REQUESTS_PER_CONNECTION = 1;
/** Waiting requests at which the connection is no longer read (what was read is parsed still). */
const STOP_READING_AT = 32;

interface Turns {
  running: number;
  waiting: Array<() => void>;
}

export function inTurnPerConnection(serve: RequestListener, limit = REQUESTS_PER_CONNECTION): RequestListener {
  const connections = new WeakMap<Socket, Turns>();
  return (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    let turns = connections.get(socket);
    if (!turns) {
      const created: Turns = { running: 0, waiting: [] };
      connections.set(socket, (turns = created));
      // A connection gone: what waited on it is not run (Node ends those requests itself).
      socket.once('close', () => (created.waiting.length = 0));
    }
    const own = turns;
    const run = () => {
      own.running++;
      // 'close' comes once the answer has been handed over, or the connection is gone.
      res.once('close', () => {
        own.running--;
        const next = own.waiting.shift();
        if (own.waiting.length < STOP_READING_AT && socket.isPaused()) socket.resume();
        next?.();
      });
      serve(req, res);
    };
    if (own.running < limit) return run();
    own.waiting.push(run);
    if (own.waiting.length >= STOP_READING_AT) socket.pause();
  };
}
