import { createServer } from 'node:net';

/** The machine's own services listen here; a test server must never be handed one of them. */
const SERVICE_PORTS = new Set([5432, 6379]);

/**
 * Ports already handed out by this process. The OS may offer a just-released port again;
 * refusing repeats keeps two helpers that ask in quick succession (a Redis port and its
 * cluster bus port, say) from getting the same number before either has bound it.
 */
const handedOut = new Set<number>();

/**
 * A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it for a listener on
 * port 0, which is then closed. Another process may still take it before the caller binds
 * it, so callers that start a server on it should be ready to retry with a fresh port.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await portChosenByOs();
    if (!SERVICE_PORTS.has(port) && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: the OS kept offering ports that are reserved or already handed out');
}

function portChosenByOs(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('freePort: listener has no TCP address'));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}
