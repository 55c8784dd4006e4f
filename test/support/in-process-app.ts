/**
 * Switchboard served in the test's own process, on a free loopback port: a test reaches into its
 * parts (`switchboard.deps`: the flag override, the backends) between the requests it sends.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { createSwitchboard, type Switchboard } from '../../src/app.js';
import type { Config } from '../../src/config/config.js';
import type { Client } from './http-client.js';
import { freePort } from './ports.js';

export interface InProcessApp {
  switchboard: Switchboard;
  url: string;
  close(): Promise<void>;
}

export async function serveInProcess(config: Config): Promise<InProcessApp> {
  const switchboard = await createSwitchboard(config);
  const server: Server = createServer(switchboard.app.callback()).listen(await freePort(), '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    switchboard,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      await new Promise((resolve) => server.close(resolve));
      await switchboard.close();
    },
  };
}

/** A request with the session cookie `sid` (the jar of one tab's moment), answered 200; the cookie it was given back. */
export async function sendWithCookie(client: Client, sid: string, method: 'GET' | 'PATCH', body?: unknown) {
  client.cookies.set('sid', sid);
  const reply = method === 'GET' ? await client.get('/api/session') : await client.patch('/api/session', body);
  expect(reply.status, reply.text).to.equal(200);
  return { reply, sid: client.cookies.get('sid')! };
}
