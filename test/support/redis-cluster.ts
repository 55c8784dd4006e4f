import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.js';
import { redisCommand, startRedis, waitUntil, type RedisProcess } from './redis-server.js';

const execFileAsync = promisify(execFile);
const HOST = '127.0.0.1';
/** Gossip settles in a second or two; 30 s (600 × 50 ms) covers a loaded CI machine. */
const CLUSTER_OK_ATTEMPTS = 600;

export interface RedisClusterProcess {
  /** Every master, in slot order (the first holds slot 0). */
  readonly nodes: { host: string; port: number }[];
  /** `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, the format of REDIS_CLUSTER_NODES. */
  readonly nodesEnv: string;
  /** The servers themselves, same order as `nodes`, to kill, pause or restart one in a failure test. */
  readonly processes: RedisProcess[];
  /** The replicas (`replicas` per master; which master each follows is redis-cli's choice). */
  readonly replicaProcesses: RedisProcess[];
  /** Resolves once every node reports `cluster_state:ok` again (bounded, ~30 s), e.g. after a node's `restart()`. */
  waitUntilOk(): Promise<void>;
  /** Stops every node (gracefully); resolves once all have exited. */
  stop(): Promise<void>;
}

export interface StartRedisClusterOptions {
  /** Number of masters; `redis-cli --cluster create` needs at least 3. */
  masters?: number;
  /** Replicas per master (`--cluster-replicas`), 0 by default. */
  replicas?: number;
  /**
   * `cluster-node-timeout`. Redis's 15 s default makes a killed node take 15 s to be marked
   * failed and 30 s more to be taken back after a restart; 3 s keeps failure tests short.
   */
  nodeTimeoutMs?: number;
}

/**
 * Starts a Redis Cluster of child processes: masters only, each on a free client port and a
 * free bus port (`--cluster-port`, so the default PORT+10000 cannot run past 65535), joined
 * with `redis-cli --cluster create`, resolved once every node reports `cluster_state:ok`
 * and knows every other node. A node's `nodes-PORT.conf` stays in its directory, so a node
 * that was killed or stopped comes back into the cluster with `restart()`.
 */
export async function startRedisCluster(opts: StartRedisClusterOptions = {}): Promise<RedisClusterProcess> {
  const masters = opts.masters ?? 3;
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 3000;
  const replicas = opts.replicas ?? 0;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new Error(`startRedisCluster: masters must be an integer of at least 3, got ${masters}`);
  }
  const processes: RedisProcess[] = [];
  const waitUntilOk = async (): Promise<void> => {
    for (const node of processes) {
      await waitUntil(`cluster_state:ok on ${HOST}:${node.port}`, () => clusterReady(node.port, processes.length), CLUSTER_OK_ATTEMPTS);
    }
  };
  const stop = async (): Promise<void> => {
    await Promise.all(processes.map((node) => node.stop()));
  };
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const busPort = await freePort();
      processes.push(
        await startRedis({
          extraArgs: ({ port, dir }) => [
            '--cluster-enabled', 'yes',
            '--cluster-config-file', join(dir, `nodes-${port}.conf`),
            '--cluster-port', String(busPort),
            '--cluster-node-timeout', String(nodeTimeoutMs),
          ],
        }),
      );
    }
    await createCluster(processes.map((node) => node.port), replicas);
    await waitUntilOk();
    // A replica that has not yet synced from its master does not fail over (its data is too old).
    for (const node of processes.slice(masters)) {
      await waitUntil(`replica ${HOST}:${node.port} in sync`, async () => /^master_link_status:up\r?$/m.test(await redisCommand(node.port, ['INFO', 'replication'])), CLUSTER_OK_ATTEMPTS);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  // redis-cli makes the first `masters` addresses given the masters, in slot order.
  const masterProcesses = processes.slice(0, masters);
  const nodes = masterProcesses.map((node) => ({ host: HOST, port: node.port }));
  return {
    nodes,
    nodesEnv: nodes.map((node) => `${node.host}:${node.port}`).join(','),
    processes: masterProcesses,
    replicaProcesses: processes.slice(masters),
    waitUntilOk,
    stop,
  };
}

/**
 * Moves every slot of the master on `removedPort` to the one on `entryPort`, then takes it out of
 * the cluster as an operator does (`redis-cli --cluster del-node`: the others forget it, and it is
 * reset and left running, answering CLUSTER SLOTS with no slot at all).
 */
export async function removeNode(entryPort: number, removedPort: number): Promise<void> {
  const idOf = async (port: number) => String(await redisCommand(port, ['CLUSTER', 'MYID'])).trim();
  const [from, to] = [await idOf(removedPort), await idOf(entryPort)];
  const entry = `${HOST}:${entryPort}`;
  await execFileAsync('redis-cli', ['--cluster', 'reshard', entry, '--cluster-from', from, '--cluster-to', to, '--cluster-slots', '16384', '--cluster-yes'], { timeout: 120_000 });
  await execFileAsync('redis-cli', ['--cluster', 'del-node', entry, from], { timeout: 60_000 });
}

async function createCluster(ports: number[], replicas: number): Promise<void> {
  const args = ['--cluster', 'create', ...ports.map((port) => `${HOST}:${port}`), '--cluster-replicas', String(replicas), '--cluster-yes'];
  try {
    await execFileAsync('redis-cli', args, { timeout: 60_000 });
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw new Error(`redis-cli ${args.join(' ')} failed: ${detail}`);
  }
}

async function clusterReady(port: number, nodes: number): Promise<boolean> {
  const info = await redisCommand(port, ['CLUSTER', 'INFO']);
  return (
    /^cluster_state:ok\r?$/m.test(info) &&
    new RegExp(`^cluster_known_nodes:${nodes}\\r?$`, 'm').test(info) &&
    /^cluster_slots_ok:16384\r?$/m.test(info)
  );
}
