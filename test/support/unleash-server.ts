/**
 * A real Unleash server for tests: a fresh PostgreSQL database with a random name, and
 * `unleash-server` run as a child process (never in the test process: it registers its
 * metrics in prom-client's global registry) on a free 127.0.0.1 port.
 *
 * The INIT_* API tokens are only inserted into an empty token table, hence the fresh
 * database per harness. `stop()` keeps the database so `start()` brings back the same
 * flags on the same port; `destroy()` also drops the database.
 *
 * Every wait here is bounded and fails with the server's last output lines.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendName } from '../../src/config/config.js';
import { freePort } from './ports.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVER_JS = path.join(ROOT, 'node_modules/unleash-server/dist/server.js');
const FLAG = 'session-storage';
const ENVIRONMENT = 'development';
const PROJECT = 'default';
const START_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 15_000;
const REQUEST_TIMEOUT_MS = 15_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface StrategyBody {
  name: 'flexibleRollout';
  constraints: never[];
  segments: never[];
  parameters: { rollout: string; stickiness: 'sessionId'; groupId: string };
  variants: Array<{ name: string; weight: number; weightType: 'variable'; stickiness: 'sessionId' }>;
}

export class UnleashTestServer {
  readonly url: string;
  /** What a client passes as UNLEASH_URL. */
  readonly apiUrl: string;
  /** A backend (client) token for the `development` environment of the `default` project. */
  readonly clientToken: string;
  private readonly adminToken: string;
  private readonly db: TestDatabase;
  private readonly port: number;
  private child?: ChildProcess;
  private output: string[] = [];
  private readonly killOnExit = () => this.child?.kill('SIGKILL');

  private constructor(port: number, db: TestDatabase) {
    this.port = port;
    this.db = db;
    this.url = `http://127.0.0.1:${port}`;
    this.apiUrl = `${this.url}/api`;
    this.adminToken = `*:*.${randomBytes(24).toString('hex')}`;
    this.clientToken = `${PROJECT}:${ENVIRONMENT}.${randomBytes(24).toString('hex')}`;
  }

  /** Creates the database, starts the server and waits until it reports healthy. */
  static async create(): Promise<UnleashTestServer> {
    const server = new UnleashTestServer(await freePort(), await createTestDatabase('unleash'));
    try {
      await server.start();
    } catch (err) {
      await server.destroy();
      throw err;
    }
    return server;
  }

  /** Starts the server (again) on the same database and port; resolves once /health says GOOD. */
  async start(): Promise<void> {
    if (this.child) throw new Error('Unleash test server already running');
    this.output = [];
    const child = spawn(process.execPath, [SERVER_JS], {
      cwd: ROOT,
      // A minimal environment: unleash-server reads many variables (UNLEASH_URL, PORT,
      // DATABASE_URL…) that the test process may have set for Switchboard itself.
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        DATABASE_URL: this.db.url,
        DATABASE_SSL: 'false',
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: String(this.port),
        INIT_ADMIN_API_TOKENS: this.adminToken,
        INIT_BACKEND_API_TOKENS: this.clientToken,
        CHECK_VERSION: 'false',
        SEND_TELEMETRY: 'false',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    process.once('exit', this.killOnExit);
    const keep = (chunk: Buffer) => {
      this.output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      this.output.splice(0, Math.max(0, this.output.length - 40));
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
      process.removeListener('exit', this.killOnExit);
    });

    const deadline = Date.now() + START_TIMEOUT_MS;
    let failure: string | undefined;
    while (!(await this.healthy())) {
      if (child.exitCode !== null || child.signalCode !== null) failure = `exited (${child.exitCode ?? child.signalCode}) during start`;
      else if (Date.now() > deadline) failure = `not healthy after ${START_TIMEOUT_MS} ms`;
      if (failure) {
        await this.stop();
        throw new Error(`unleash-server ${failure}\n--- its output ---\n${this.output.join('\n')}`);
      }
      await sleep(200);
    }
  }

  private async healthy(): Promise<boolean> {
    try {
      const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
      return res.ok && ((await res.json()) as { health?: string }).health === 'GOOD';
    } catch {
      return false;
    }
  }

  /** Kills the server process (the database stays). Resolves once the process is gone. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the server and drops its database. Safe to call more than once. */
  async destroy(): Promise<void> {
    await this.stop();
    await this.db.drop();
  }

  /**
   * Creates the `session-storage` flag, disabled, with one flexibleRollout strategy in
   * `development` at 0% whose variants split sessions evenly between `variants`. (Unleash 7
   * refuses flag-level environment variants: variants live on strategies.) Having a strategy
   * also stops `enable()` from adding Unleash's default 100% strategy.
   */
  async createSessionStorageFlag(variants: BackendName[]): Promise<void> {
    await this.admin('POST', `/api/admin/projects/${PROJECT}/features`, { name: FLAG, type: 'operational', impressionData: false });
    await this.putStrategy(0, variants);
  }

  /**
   * Makes the flag's only strategy in `development` a flexibleRollout of `percent`
   * (stickiness sessionId, groupId `session-storage`) with a single variant named `variant`.
   */
  async setRollout(percent: number, variant: BackendName | 'memcached'): Promise<void> {
    await this.putStrategy(percent, [variant]);
  }

  async enable(): Promise<void> {
    await this.admin('POST', `${this.flagEnvPath()}/on`);
  }

  async disable(): Promise<void> {
    await this.admin('POST', `${this.flagEnvPath()}/off`);
  }

  /** What an SDK with the client token is served (`GET /api/client/features`). */
  async clientFeatures(): Promise<{ features: Array<{ name: string; enabled: boolean; strategies: unknown[] }> }> {
    return (await this.request('GET', '/api/client/features', this.clientToken)) as never;
  }

  /** Replaces the flag's strategies in `development` by one flexibleRollout (others are deleted). */
  private async putStrategy(percent: number, variants: ReadonlyArray<BackendName | 'memcached'>): Promise<void> {
    const weight = Math.floor(1000 / Math.max(1, variants.length));
    const body: StrategyBody = {
      name: 'flexibleRollout',
      constraints: [],
      segments: [],
      parameters: { rollout: String(percent), stickiness: 'sessionId', groupId: FLAG },
      variants: variants.map((name) => ({ name, weight, weightType: 'variable', stickiness: 'sessionId' })),
    };
    const existing = (await this.admin('GET', `${this.flagEnvPath()}/strategies`)) as Array<{ id: string }>;
    const [first, ...others] = existing;
    if (first) await this.admin('PUT', `${this.flagEnvPath()}/strategies/${first.id}`, body);
    else await this.admin('POST', `${this.flagEnvPath()}/strategies`, body);
    for (const other of others) await this.admin('DELETE', `${this.flagEnvPath()}/strategies/${other.id}`);
  }

  private flagEnvPath(): string {
    return `/api/admin/projects/${PROJECT}/features/${FLAG}/environments/${ENVIRONMENT}`;
  }

  private admin(method: string, urlPath: string, body?: unknown): Promise<unknown> {
    return this.request(method, urlPath, this.adminToken, body);
  }

  private async request(method: string, urlPath: string, token: string, body?: unknown): Promise<unknown> {
    const res = await fetch(this.url + urlPath, {
      method,
      headers: { Authorization: token, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`Unleash ${method} ${urlPath} answered ${res.status}: ${text.slice(0, 500)}`);
    return text ? (JSON.parse(text) as unknown) : undefined;
  }
}
