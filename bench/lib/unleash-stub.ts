/**
 * A stand-in for the Unleash API so that Switchboard evaluates its `session-storage` flag on
 * every request as it does in production (a flexibleRollout at 100 % with a strategy variant
 * naming the backend, stickiness sessionId), without an Unleash server and its PostgreSQL.
 * Each Switchboard target gets its own base path: /<backend>/api.
 */
import { createServer, type Server } from 'node:http';

export function featuresFor(backend: string) {
  return {
    version: 2,
    features: [
      {
        name: 'session-storage',
        type: 'release',
        enabled: true,
        stale: false,
        impressionData: false,
        project: 'default',
        strategies: [
          {
            name: 'flexibleRollout',
            constraints: [],
            segments: [],
            parameters: { rollout: '100', stickiness: 'sessionId', groupId: 'session-storage' },
            variants: [{ name: backend, weight: 1000, weightType: 'variable', stickiness: 'sessionId', payload: { type: 'string', value: backend } }],
          },
        ],
        variants: [],
      },
    ],
    query: {},
  };
}

export async function startUnleashStub(): Promise<{ server: Server; port: number; polls: Map<string, number> }> {
  const polls = new Map<string, number>();
  const server = createServer((req, res) => {
    const m = /^\/(\w+)\/api\/client\/(features|register|metrics)/.exec(req.url ?? '');
    req.resume();
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    const [, backend = '', what] = m;
    if (what !== 'features') {
      res.writeHead(202).end();
      return;
    }
    polls.set(backend, (polls.get(backend) ?? 0) + 1);
    const etag = `"bench-${backend}"`;
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', etag }).end(JSON.stringify(featuresFor(backend)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : 0, polls };
}
