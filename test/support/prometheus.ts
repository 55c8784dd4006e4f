/**
 * A real Prometheus (and promtool) for tests.
 *
 * `startPrometheus` runs the `prometheus` binary as a child of the test process, on 127.0.0.1
 * and a free port, with a scratch directory for its config, rule copies and TSDB; it scrapes
 * the given targets every second and evaluates the given rule files every second.
 *
 * Rule windows: the shipped rules (config/prometheus/rules.yml) use production windows
 * (`[5m]`, `for: 2m`), written as literals on purpose. With `shortenWindows: true` the copies
 * handed to Prometheus have every range window of a minute or more (`[5m]`, `[10m]`, `[1h]`)
 * replaced by `[15s]` and every non-zero `for:` by `for: 3s`, so that a live test sees an
 * alert fire within seconds. The recording-rule names (`…:rate5m`) stay as they are.
 *
 * Both binaries come from Debian's `prometheus` package (2.42). When one is missing, the
 * functions here reject with an error that says so: the tests fail, they do not skip.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeScratchDir, removeScratchDir, ServerChild } from './child-process.js';
import { freePort } from './ports.js';

const HOST = '127.0.0.1';
const POLL_INTERVAL_MS = 100;
/** Prometheus is ready in about a second here; 300 polls (about 30 s) covers a loaded CI machine. */
const READY_ATTEMPTS = 300;
const REQUEST_TIMEOUT_MS = 5_000;

/** What a shortened range window becomes. */
export const SHORT_WINDOW = '15s';
/** What a shortened non-zero `for:` becomes. */
export const SHORT_FOR = '3s';

const MISSING_BINARY =
  'is not installed or not on PATH. Install Prometheus (Debian/Ubuntu: apt-get install -y prometheus, which ships promtool); CI installs it.';

/**
 * Rewrites rule-file text for live tests: every range window in minutes, hours, days or weeks
 * (`[5m]`, `[10m]`, `[1h]`) becomes `[15s]`, every `for:` line with a non-zero duration
 * becomes `for: 3s`. Windows already in seconds and `for: 0s` are left alone.
 */
export function shortenWindows(rules: string): string {
  return rules
    .replace(/\[\d+[mhdw]\]/g, `[${SHORT_WINDOW}]`)
    .replace(/^([ \t]*for:[ \t]*)(\S+)[ \t]*$/gm, (line: string, key: string, duration: string) =>
      /^0+[a-z]*$/.test(duration) ? line : `${key}${SHORT_FOR}`,
    );
}

export interface PromtoolResult {
  /** Exit status; 0 is success. */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `promtool` with `args` (from `cwd`, default the current directory) and resolves with
 * its exit status and output whatever the status. Rejects only when promtool cannot be run.
 */
export function runPromtool(args: readonly string[], cwd?: string): Promise<PromtoolResult> {
  return new Promise((resolvePromise, reject) => {
    execFile('promtool', [...args], { cwd, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) {
        resolvePromise({ code: 0, stdout, stderr });
      } else if (error.code === 'ENOENT') {
        reject(new Error(`promtool ${MISSING_BINARY}`));
      } else if (typeof error.code === 'number') {
        resolvePromise({ code: error.code, stdout, stderr });
      } else {
        reject(new Error(`promtool ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      }
    });
  });
}

/** One element of an instant vector from `/api/v1/query`. */
export interface Sample {
  metric: Record<string, string>;
  /** [unix seconds, value as Prometheus prints it ("1", "0.25", "NaN")] */
  value: [number, string];
}

/** One entry of `/api/v1/alerts`. */
export interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing' | 'inactive';
  activeAt?: string;
  value: string;
}

export interface StartPrometheusOptions {
  /** `host:port` of each process to scrape (path /metrics), all in job `switchboard`. */
  scrapeTargets: string[];
  /** Rule files to load; they are copied into the scratch directory first. */
  rulesFiles: string[];
  /** Shorten the copies' windows for live tests (see `shortenWindows`). Default false. */
  shortenWindows?: boolean;
  /** Port to listen on; by default a free one (and a retry with another if it is taken). */
  port?: number;
}

export interface PrometheusProcess {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /**
   * Instant query, at `time` (unix seconds) or now; rejects on a query error or a
   * non-vector result.
   */
  query(expr: string, time?: number): Promise<Sample[]>;
  /** Pending and firing alerts. */
  alerts(): Promise<Alert[]>;
  /**
   * Resolves once every scrape target has been scraped at least once (successfully or not).
   * Prometheus hands new targets to its scraper only every 5 s, so the first scrape comes
   * about 5 s after start; live tests call this before they expect any series.
   */
  waitForScrapes(): Promise<void>;
  /** Kills the process (SIGTERM, then SIGKILL) and removes the scratch directory. Idempotent. */
  stop(): Promise<void>;
}

/** Starts Prometheus and resolves once `/-/ready` answers 200. */
export async function startPrometheus(options: StartPrometheusOptions): Promise<PrometheusProcess> {
  const dir = makeScratchDir('switchboard-prometheus-');
  try {
    const configFile = writeConfig(dir, options);
    const attempts = options.port === undefined ? 3 : 1;
    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? (await freePort());
      const server = new PrometheusServer(port, dir, configFile, options.scrapeTargets.length);
      try {
        await server.start();
        return server;
      } catch (err) {
        if (attempt < attempts && err instanceof PortTakenError) continue;
        throw err;
      }
    }
  } catch (err) {
    removeScratchDir(dir);
    throw err;
  }
}

function writeConfig(dir: string, options: StartPrometheusOptions): string {
  const rulesDir = join(dir, 'rules');
  mkdirSync(rulesDir);
  const ruleFiles = options.rulesFiles.map((file, i) => {
    const text = readFileSync(resolve(file), 'utf8');
    const copy = join(rulesDir, `${i}-${basename(file)}`);
    writeFileSync(copy, options.shortenWindows === true ? shortenWindows(text) : text);
    return copy;
  });
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: ruleFiles,
    scrape_configs: [
      { job_name: 'switchboard', metrics_path: '/metrics', static_configs: [{ targets: options.scrapeTargets }] },
    ],
  };
  const file = join(dir, 'prometheus.yml');
  // JSON is YAML: no YAML library needed.
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

class PortTakenError extends Error {}

class PrometheusServer implements PrometheusProcess {
  readonly url: string;
  private proc: ServerChild | undefined;

  constructor(
    private readonly port: number,
    private readonly dir: string,
    private readonly configFile: string,
    private readonly targetCount: number,
  ) {
    this.url = `http://${HOST}:${port}`;
  }

  async start(): Promise<void> {
    const proc = this.spawnChild();
    for (let attempt = 0; attempt < READY_ATTEMPTS && proc.running; attempt++) {
      if (await this.isReady()) return;
      await sleep(POLL_INTERVAL_MS);
    }
    const why = proc.running ? `was not ready after ${READY_ATTEMPTS} polls of /-/ready` : 'exited during start-up';
    if (proc.running) {
      proc.kill('SIGKILL');
      await proc.waitForExit();
    }
    const message = `prometheus on ${HOST}:${this.port} ${why}\n${proc.output.trim()}`;
    throw proc.output.includes('address already in use') ? new PortTakenError(message) : new Error(message);
  }

  async query(expr: string, time?: number): Promise<Sample[]> {
    const at = time === undefined ? '' : `&time=${time}`;
    const data = await this.api<{ resultType: string; result: unknown }>(`/api/v1/query?query=${encodeURIComponent(expr)}${at}`);
    if (data.resultType !== 'vector') throw new Error(`query ${expr}: expected a vector, got ${data.resultType}`);
    return data.result as Sample[];
  }

  async alerts(): Promise<Alert[]> {
    const data = await this.api<{ alerts: Alert[] }>('/api/v1/alerts');
    return data.alerts;
  }

  async waitForScrapes(): Promise<void> {
    type Target = { health: 'up' | 'down' | 'unknown'; scrapeUrl: string };
    let targets: Target[] = [];
    for (let attempt = 0; attempt < READY_ATTEMPTS; attempt++) {
      targets = (await this.api<{ activeTargets: Target[] }>('/api/v1/targets?state=active')).activeTargets;
      if (targets.length === this.targetCount && targets.every((t) => t.health !== 'unknown')) return;
      await sleep(POLL_INTERVAL_MS);
    }
    throw new Error(`prometheus: targets not all scraped after ${READY_ATTEMPTS} polls: ${JSON.stringify(targets)}`);
  }

  async stop(): Promise<void> {
    await this.proc?.stop(`prometheus on port ${this.port}`);
    removeScratchDir(this.dir);
  }

  private async api<T>(pathAndQuery: string): Promise<T> {
    const response = await fetch(`${this.url}${pathAndQuery}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const body = (await response.json()) as { status: string; data?: T; errorType?: string; error?: string };
    if (body.status !== 'success' || body.data === undefined) {
      throw new Error(`prometheus ${pathAndQuery}: ${response.status} ${body.errorType ?? ''} ${body.error ?? ''}`.trim());
    }
    return body.data;
  }

  private async isReady(): Promise<boolean> {
    try {
      const response = await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      return response.status === 200;
    } catch {
      return false;
    }
  }

  private spawnChild(): ServerChild {
    const args = [
      `--config.file=${this.configFile}`,
      `--storage.tsdb.path=${join(this.dir, 'data')}`,
      `--web.listen-address=${HOST}:${this.port}`,
      '--log.level=warn',
    ];
    this.proc = new ServerChild('prometheus', args, MISSING_BINARY);
    return this.proc;
  }
}

// ---------------------------------------------------------------- Grafana dashboards

/**
 * The parts of a Grafana dashboard model (config/grafana/switchboard.json) that the tests
 * read: panels with their PromQL targets, template variables and annotations.
 */
export interface GrafanaTarget {
  expr?: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}
export interface GrafanaPanel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: GrafanaTarget[];
  panels?: GrafanaPanel[];
}
export interface GrafanaVariable {
  name: string;
  type: string;
  query: unknown;
  multi?: boolean;
  includeAll?: boolean;
  datasource?: { type?: string; uid?: string };
}
export interface GrafanaDashboard {
  schemaVersion: number;
  panels: GrafanaPanel[];
  templating: { list: GrafanaVariable[] };
  annotations: { list: Array<{ name: string; expr?: string; datasource?: { type?: string; uid?: string } }> };
}

/** One PromQL query of a dashboard: `where` names it for messages ("panel 7 "…" target A"). */
export interface DashboardQuery {
  where: string;
  expr: string;
  /** The panel it belongs to; undefined for an annotation query. */
  panel?: GrafanaPanel;
}

/** Every panel, rows' nested panels included. */
export function allPanels(panels: GrafanaPanel[]): GrafanaPanel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

/** Every PromQL query of the dashboard (panel targets and annotations), with a name for messages. */
export function dashboardQueries(dashboard: GrafanaDashboard): DashboardQuery[] {
  const fromPanels = allPanels(dashboard.panels).flatMap((panel) =>
    (panel.targets ?? []).map((t) => ({ where: `panel ${panel.id} "${panel.title}" target ${t.refId ?? '?'}`, expr: t.expr ?? '', panel })),
  );
  const fromAnnotations = dashboard.annotations.list
    .filter((a) => a.expr !== undefined)
    .map((a) => ({ where: `annotation "${a.name}"`, expr: a.expr ?? '' }));
  return [...fromPanels, ...fromAnnotations];
}

/**
 * Replaces `$var`, `${var}` and `${var:format}` by `values[var]` (what Grafana would send:
 * `.*` for an "All" instance, a duration for `$__rate_interval`…); throws on a variable that
 * `values` does not name, so a new variable in the dashboard cannot slip through unchecked.
 */
export function substituteVariables(expr: string, values: Readonly<Record<string, string>>): string {
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, (whole, braced: string | undefined, bare: string | undefined) => {
    const value = values[braced ?? bare ?? ''];
    if (value === undefined) throw new Error(`unknown Grafana variable ${whole} in: ${expr}`);
    return value;
  });
}
