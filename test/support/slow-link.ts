import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 in front of a real server, as the network between an app and its
 * backend: it hands every answer back `delayMs` late (requests pass straight through), as a
 * long or congested link does, and it can be cut — every connection dropped and new ones
 * refused, as when the backend's host goes away — or stalled — connections kept and accepted,
 * nothing passed either way, as in a network partition or a failover — and restored on the
 * same port.
 */
export interface SlowLink {
  readonly port: number;
  /** Drops every connection and stops listening: connecting is refused until `restore`. */
  cut(): Promise<void>;
  /** Keeps every connection and accepts new ones, but passes nothing until `restore` (then what was held). */
  stall(): void;
  /** Listens again on the same port, and passes on what a stall held. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startSlowLink(target: { host: string; port: number }, delayMs = 0): Promise<SlowLink> {
  const sockets = new Set<Socket>();
  let stalled = false;
  /** What a stall held back, to pass on at `restore`. */
  let held: Array<() => void> = [];
  const pass = (to: Socket, delay: number) => (chunk: Buffer) => {
    const write = () => to.writable && to.write(chunk);
    if (stalled) held.push(write);
    else if (delay > 0) setTimeout(write, delay);
    else write();
  };
  const relay = (client: Socket) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    upstream.on('data', pass(client, delayMs));
    client.on('data', pass(upstream, 0));
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  };
  const listen = async (port: number): Promise<Server> => {
    const server = createServer(relay);
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
    return server;
  };
  let server: Server | undefined = await listen(0);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('slow link: no TCP address');
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });
  return {
    port: address.port,
    cut: stop,
    stall: () => {
      stalled = true;
    },
    restore: async () => {
      server ??= await listen(address.port);
      stalled = false;
      const release = held;
      held = [];
      for (const write of release) write();
    },
    close: stop,
  };
}
