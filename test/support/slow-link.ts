import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 in front of a real server, as the network between an app and its
 * backend: it hands every answer back `delayMs` late (requests pass straight through), as a
 * long or congested link does, and it can be cut — every connection dropped and new ones
 * refused, as when the backend's host goes away — and restored on the same port.
 */
export interface SlowLink {
  readonly port: number;
  /** Drops every connection and stops listening: connecting is refused until `restore`. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startSlowLink(target: { host: string; port: number }, delayMs = 0): Promise<SlowLink> {
  const sockets = new Set<Socket>();
  const relay = (client: Socket) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    if (delayMs > 0) upstream.on('data', (chunk: Buffer) => setTimeout(() => client.writable && client.write(chunk), delayMs));
    else upstream.pipe(client);
    client.pipe(upstream);
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
    restore: async () => {
      server ??= await listen(address.port);
    },
    close: stop,
  };
}
