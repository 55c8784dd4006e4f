/**
 * An operator moves a master's slots to another and removes it from the Redis Cluster
 * (`redis-cli --cluster reshard`, then `del-node`, which resets the node and leaves it running).
 * The cluster is healthy; Switchboard must say so. Its slot map, refreshed only when a command is
 * redirected, still named the removed node, which answers `cluster_state:fail`: every probe said
 * Redis was down (/readyz "degraded", session_store_up 0), and with little traffic the failed
 * probes opened the breaker and sent sessions to the database.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startApp, type AppProcess } from '../support/app-server.js';
import { Client } from '../support/http-client.js';
import { startRedisCluster, type RedisClusterProcess } from '../support/redis-cluster.js';
import { redisCommand } from '../support/redis-server.js';
import { sample } from './metrics-text.js';

const run = promisify(execFile);
/** Two of the app's health probes (every 5 s) and then some. */
const WATCH_MS = 12_000;

describe('a master removed from the Redis Cluster while it keeps running', function () {
  this.timeout(180_000);
  let cluster: RedisClusterProcess;
  let app: AppProcess;

  before(async () => {
    cluster = await startRedisCluster({ masters: 4 });
    app = await startApp({ SESSION_STORAGE: 'redis', SESSION_FALLBACK: 'database', REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_KEY_PREFIX: 'cnr:' });
  });
  after(async () => {
    await app?.stop();
    await cluster?.stop();
  });

  it('is not reported down, and does not send sessions to the database', async () => {
    const user = new Client(app.url);
    await user.signup();
    const [first, , , removed] = cluster.nodes as [{ port: number }, unknown, unknown, { port: number }];
    const idOf = async (port: number) => String(await redisCommand(port, ['CLUSTER', 'MYID'])).trim();
    const [from, to] = [await idOf(removed.port), await idOf(first.port)];
    const entry = `127.0.0.1:${first.port}`;
    await run('redis-cli', ['--cluster', 'reshard', entry, '--cluster-from', from, '--cluster-to', to, '--cluster-slots', '16384', '--cluster-yes'], { timeout: 120_000 });
    await run('redis-cli', ['--cluster', 'del-node', entry, from], { timeout: 60_000 });
    expect(String(await redisCommand(removed.port, ['CLUSTER', 'INFO'])), 'the removed node, still running').to.match(/cluster_state:fail/);

    const metrics = async () => (await new Client(app.url).get('/metrics')).text;
    const seen = new Set<number>();
    for (const end = Date.now() + WATCH_MS; Date.now() < end; ) {
      seen.add(sample(await metrics(), 'session_store_up', { backend: 'redis' }));
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect([...seen], 'session_store_up{backend="redis"} while watched').to.deep.equal([1]);
    const ready = await new Client(app.url).get('/readyz');
    expect(ready.json, ready.text).to.deep.include({ status: 'ok' });
    expect(sample(await metrics(), 'session_store_fallbacks_total', { from: 'redis' }), 'sessions sent to the database').to.equal(0);
    const res = await user.get('/api/session');
    expect(res.status, res.text).to.equal(200);
  });
});
