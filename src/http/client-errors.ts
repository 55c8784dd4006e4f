/**
 * Requests that Node's HTTP parser refuses before Koa sees them — a malformed request line,
 * headers over Node's 16 KB limit (a runaway cookie), a Content-Length that does not add up —
 * get the API's error shape too, instead of Node's bare status line. As Node's own handler
 * does, the answer is written only while no response of this connection has begun (a
 * keep-alive connection may have one in flight), and the connection is then closed: after a
 * parse error, nothing more on it can be trusted. The same goes for a CONNECT request (Node
 * would drop the connection without a word), an HTTP/1.1 request without Host (Node's own
 * answer is a bare 400) and one with an Expect Node does not know (a bare 417). Each carries the API's security headers, as every answer does.
 */
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { apiHeaders } from './security-headers.js';

/** Node's parser error code → the answer (test/http/errors.test.ts checks README lists them). */
export const PARSER_REFUSALS: Readonly<Record<string, readonly [number, string, string]>> = {
  // Node's limit is on the request line and headers together, and which part overflowed depends
  // on how the network cut the request into packets: one answer for both.
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'The request is too large: its URL or its headers (a cookie too many?)'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request_timeout', 'The request took too long'],
  other: [400, 'bad_request', 'The request could not be understood'],
};

const SECURITY_HEADERS = Object.entries(apiHeaders())
  .map(([name, value]) => `${name}: ${value}\r\n`)
  .join('');

function answer(status: number, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${SECURITY_HEADERS}Connection: close\r\n\r\n${body}`;
}

/**
 * `server` must be created with `requireHostHeader: false`: the Host check is `refusesWithoutHost`'s.
 * `refused` hears of each answer given here by its code: these requests reach no route, and so
 * no request metric (a slowloris's 408s, a smuggling attempt's 400s).
 */
export function answerClientErrors(server: Server, refused: (code: string) => void): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex & { _httpMessage?: ServerResponse | null }) => {
    const inFlight = socket._httpMessage;
    if (err.code !== 'ECONNRESET' && socket.writable && (!inFlight || !inFlight.headersSent)) {
      const refusal = PARSER_REFUSALS[err.code ?? ''] ?? PARSER_REFUSALS.other!;
      socket.write(answer(...refusal));
      refused(refusal[1]);
    }
    socket.destroy();
  });
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    if (socket.writable) socket.write(answer(405, 'method_not_allowed', 'CONNECT is not supported'));
    refused('method_not_allowed');
    socket.destroy();
  });
  // An Expect other than 100-continue, which Node would answer with a bare 417 (RFC 9110 §10.1.1).
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    refuse(res, 417, 'expectation_failed', 'Only "Expect: 100-continue" is supported');
    refused('expectation_failed');
  });
}

/** Answers (400) an HTTP/1.1 request without Host, as RFC 9112 §3.2 says to; true when it did. */
export function refusesWithoutHost(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.headers.host !== undefined || req.httpVersion !== '1.1') return false;
  refuse(res, 400, 'bad_request', 'An HTTP/1.1 request needs a Host header');
  return true;
}

function refuse(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { ...apiHeaders(), 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
  res.end(body);
}
