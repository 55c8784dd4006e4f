/**
 * Requests that Node's HTTP parser refuses before Koa sees them — a malformed request line,
 * headers over Node's 16 KB limit (a runaway cookie), a Content-Length that does not add up —
 * get the API's error shape too, instead of Node's bare status line. As Node's own handler
 * does, the answer is written only while no response of this connection has begun (a
 * keep-alive connection may have one in flight), and the connection is then closed: after a
 * parse error, nothing more on it can be trusted.
 */
import { STATUS_CODES, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/** Node's parser error code → the answer (test/http/errors.test.ts checks README lists them). */
export const PARSER_REFUSALS: Readonly<Record<string, readonly [number, string, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'The request headers are too large (a cookie too many?)'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request_timeout', 'The request took too long'],
  other: [400, 'bad_request', 'The request could not be understood'],
};

function answer(status: number, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex & { _httpMessage?: ServerResponse | null }) => {
    const inFlight = socket._httpMessage;
    if (err.code !== 'ECONNRESET' && socket.writable && (!inFlight || !inFlight.headersSent)) socket.write(answer(...(PARSER_REFUSALS[err.code ?? ''] ?? PARSER_REFUSALS.other!)));
    socket.destroy();
  });
}
