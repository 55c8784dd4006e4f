/**
 * The operator-facing Prometheus material: config/prometheus/rules.yml, its promtool unit
 * tests, the example scrape config and the Grafana dashboard config/grafana/switchboard.json.
 *
 * Needs `promtool` and `prometheus` on PATH (Debian package `prometheus`); without them these
 * tests fail with a message saying so.
 */
import { expect } from 'chai';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Metrics } from '../../src/metrics/metrics.js';
import {
  allPanels,
  dashboardQueries,
  runPromtool,
  startPrometheus,
  substituteVariables as substitute,
  type GrafanaDashboard,
  type PrometheusProcess,
  type PromtoolResult,
} from '../support/prometheus.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RULES = 'config/prometheus/rules.yml';
const RULE_TESTS_DIR = 'config/prometheus/tests';
const EXAMPLE_CONFIG = 'config/prometheus/prometheus.example.yml';
const DASHBOARD = 'config/grafana/switchboard.json';
const RUNBOOK = 'docs/runbook.md';

/** The metrics of the contract (../shared/API.md, "Operations"): names are part of it. */
const CONTRACT_METRICS = [
  'session_store_operation_duration_seconds',
  'session_store_operations_total',
  'session_store_fallbacks_total',
  'session_migrations_total',
  'session_backend_selected_total',
  'session_store_up',
  'session_rollbacks_total',
  'auth_logins_total',
  'session_revocations_total',
  'http_request_duration_seconds',
];
/** Switchboard's own metrics beyond the contract: exported only where Unleash is configured. */
const UNLEASH_METRICS = ['unleash_up', 'unleash_last_sync_timestamp_seconds'];
/** prom-client default metrics (DEFAULT_METRICS below) that an alert reads. */
const RULE_DEFAULT_METRICS = ['process_open_fds', 'process_max_fds'];
const HISTOGRAMS = ['session_store_operation_duration_seconds', 'http_request_duration_seconds', 'nodejs_gc_duration_seconds'];

/**
 * prom-client's default metrics as Switchboard exports them (the three `nodejs_active_*_total`
 * gauges are removed because promtool rejects them), plus Prometheus's own `up`.
 */
const DEFAULT_METRICS = [
  'process_cpu_user_seconds_total',
  'process_cpu_system_seconds_total',
  'process_cpu_seconds_total',
  'process_start_time_seconds',
  'process_resident_memory_bytes',
  'process_virtual_memory_bytes',
  'process_heap_bytes',
  'process_open_fds',
  'process_max_fds',
  'nodejs_eventloop_lag_seconds',
  'nodejs_eventloop_lag_min_seconds',
  'nodejs_eventloop_lag_max_seconds',
  'nodejs_eventloop_lag_mean_seconds',
  'nodejs_eventloop_lag_stddev_seconds',
  'nodejs_eventloop_lag_p50_seconds',
  'nodejs_eventloop_lag_p90_seconds',
  'nodejs_eventloop_lag_p99_seconds',
  'nodejs_active_handles',
  'nodejs_active_requests',
  'nodejs_active_resources',
  'nodejs_heap_size_total_bytes',
  'nodejs_heap_size_used_bytes',
  'nodejs_external_memory_bytes',
  'nodejs_heap_space_size_total_bytes',
  'nodejs_heap_space_size_used_bytes',
  'nodejs_heap_space_size_available_bytes',
  'nodejs_version_info',
  'nodejs_gc_duration_seconds',
  'up',
];

/** What each Grafana variable becomes when the dashboard's queries are checked. */
const GRAFANA_VARIABLES: Record<string, string> = {
  instance: '.*',
  __rate_interval: '5m',
  __interval: '5m',
  __range: '5m',
  __range_s: '300',
  __range_ms: '300000',
  __interval_ms: '300000',
};

/** The dashboard's variables replaced by the values above (the helper lives in test/support/prometheus.ts). */
const substituteVariables = (expr: string): string => substitute(expr, GRAFANA_VARIABLES);

const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');

/** promtool's result as one string, for assertion messages. */
const output = (r: PromtoolResult): string => `exit ${r.code}\n${r.stdout}\n${r.stderr}`;

// ---------------------------------------------------------------- rule file reading

interface RuleEntry {
  kind: 'record' | 'alert';
  name: string;
  expr: string;
}

/**
 * The rules of a rule file, read line by line. rules.yml keeps to a simple shape (each rule
 * starts with `- record:` or `- alert:`, then `expr:` either on one line or as a `|` block),
 * so no YAML library is needed; a test below checks that every rule was found.
 */
function readRules(text: string): RuleEntry[] {
  const lines = text.split('\n');
  const rules: RuleEntry[] = [];
  let current: { kind: 'record' | 'alert'; name: string } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const start = /^\s*- (record|alert):\s*(\S+)\s*$/.exec(line);
    if (start) {
      current = { kind: start[1] as 'record' | 'alert', name: start[2] ?? '' };
      continue;
    }
    const exprLine = /^(\s*)expr:\s*(.*?)\s*$/.exec(line);
    if (!exprLine || current === undefined) continue;
    const indent = exprLine[1]?.length ?? 0;
    let expr = exprLine[2] ?? '';
    if (expr === '|' || expr === '|-' || expr === '>') {
      const block: string[] = [];
      while (i + 1 < lines.length) {
        const next = lines[i + 1] ?? '';
        if (next.trim() !== '' && next.length - next.trimStart().length <= indent) break;
        block.push(next.trim());
        i++;
      }
      expr = block.filter(Boolean).join('\n');
    } else if (/^'.*'$|^".*"$/.test(expr)) {
      expr = expr.slice(1, -1);
    }
    rules.push({ ...current, expr });
    current = undefined;
  }
  return rules;
}

// ---------------------------------------------------------------- PromQL metric names

const PROMQL_KEYWORDS = new Set([
  'and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan',
]);

/**
 * The metric names an expression selects. Good enough for the expressions we write: string
 * literals, label matchers, ranges and grouping label lists are removed first; what is left
 * is function names (followed by `(`), keywords, numbers and metric names.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()/g)) {
    const name = match[0];
    if (!PROMQL_KEYWORDS.has(name.toLowerCase())) names.add(name);
  }
  return [...names];
}

/** A histogram's `_bucket`/`_sum`/`_count` series belong to the histogram's name. */
function baseName(name: string): string {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return HISTOGRAMS.includes(base) ? base : name;
}

/** Writes `exprs` as recording rules into a temporary rule file and runs `promtool check rules` on it. */
async function checkAsRecordingRules(exprs: string[]): Promise<PromtoolResult> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-dashboard-rules-'));
  try {
    const file = join(dir, 'dashboard.rules.yml');
    const rules = exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr }));
    // JSON is YAML.
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }, null, 2));
    return await runPromtool(['check', 'rules', file]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the tests

describe('Prometheus rules (config/prometheus/rules.yml)', function () {
  this.timeout(60_000);
  const rules = readRules(read(RULES));
  const alerts = rules.filter((r) => r.kind === 'alert');
  const records = rules.filter((r) => r.kind === 'record');

  it('pass promtool check rules', async () => {
    const result = await runPromtool(['check', 'rules', RULES], ROOT);
    expect(result.code, output(result)).to.equal(0);
    expect(result.stdout + result.stderr, output(result)).to.match(new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('pass their promtool unit tests (config/prometheus/tests/*.yml)', async () => {
    const files = readdirSync(join(ROOT, RULE_TESTS_DIR)).filter((f) => f.endsWith('.yml')).sort();
    expect(files.length, `no test files in ${RULE_TESTS_DIR}`).to.be.greaterThan(0);
    const result = await runPromtool(['test', 'rules', ...files.map((f) => `${RULE_TESTS_DIR}/${f}`)], ROOT);
    expect(result.code, output(result)).to.equal(0);
    expect(result.stdout + result.stderr, output(result)).to.not.match(/FAILED/);
  });

  it('are all found by this test, each with an expression', () => {
    const declared = read(RULES).match(/^\s*- (record|alert):/gm) ?? [];
    expect(rules).to.have.length(declared.length);
    expect(rules.length).to.be.greaterThan(0);
    for (const rule of rules) expect(rule.expr, rule.name).to.not.equal('');
  });

  it('use only the contract metrics, the Unleash gauges, the process file descriptors and their own recording rules', () => {
    const allowed = new Set([...CONTRACT_METRICS, ...UNLEASH_METRICS, ...RULE_DEFAULT_METRICS, ...records.map((r) => r.name), 'up']);
    for (const rule of rules) {
      for (const name of metricNames(rule.expr)) {
        expect(allowed.has(baseName(name)), `${rule.name} uses unknown metric ${name}`).to.equal(true);
      }
    }
  });

  it('read only default metrics that the server exports', async () => {
    const metrics = new Metrics();
    const exported = await metrics.registry.metrics();
    for (const name of RULE_DEFAULT_METRICS) {
      expect(DEFAULT_METRICS).to.include(name);
      expect(exported, name).to.match(new RegExp(`^${name} \\d+`, 'm'));
    }
  });

  it('keep every window and every `for:` a literal that tests can shorten', () => {
    for (const line of read(RULES).split('\n').filter((l) => /^\s*for:/.test(l))) {
      expect(line, 'a for: line holds one duration').to.match(/^\s*for: \d+[smhdw]\s*$/);
    }
    for (const rule of rules) {
      // no `[$window]`, no subquery `[5m:1m]`: whole minutes or hours only
      for (const window of rule.expr.match(/\[[^\]]*\]/g) ?? []) {
        expect(window, `${rule.name}: window ${window}`).to.match(/^\[\d+[mh]\]$/);
      }
    }
  });

  it('have a firing and a not-firing promtool test case for every alert', () => {
    const tests = readdirSync(join(ROOT, RULE_TESTS_DIR))
      .filter((f) => f.endsWith('.yml'))
      .map((f) => read(`${RULE_TESTS_DIR}/${f}`))
      .join('\n');
    expect(alerts.length).to.be.greaterThan(0);
    for (const { name } of alerts) {
      expect(tests, `${name}: no case where it fires`).to.match(new RegExp(`alertname: ${name}\\s*\\n\\s*exp_alerts:\\s*\\n\\s*- exp_labels:`));
      expect(tests, `${name}: no case where it must not fire`).to.match(new RegExp(`alertname: ${name}\\s*\\n\\s*exp_alerts: \\[\\]`));
    }
  });

  it('have their values asserted in a promtool test for every recording rule', () => {
    const tests = readdirSync(join(ROOT, RULE_TESTS_DIR))
      .filter((f) => f.endsWith('.yml'))
      .map((f) => read(`${RULE_TESTS_DIR}/${f}`))
      .join('\n');
    const asserted = (tests.match(/^\s*- expr: .*$/gm) ?? []).join('\n');
    for (const { name } of records) {
      expect(asserted, `${name}: no promql_expr_test`).to.include(name);
    }
  });

  it('link every alert to its section of the runbook', () => {
    const runbook = read(RUNBOOK);
    const text = read(RULES);
    for (const { name } of alerts) {
      expect(runbook, `${RUNBOOK} has no "### ${name}" section`).to.match(new RegExp(`^### ${name}\\s*$`, 'm'));
      expect(text, `${name} has no runbook annotation`).to.include(`runbook: 'docs/runbook.md#${name.toLowerCase()}'`);
    }
  });
});

describe('the example Prometheus config (config/prometheus/prometheus.example.yml)', function () {
  this.timeout(30_000);

  it('passes promtool check config, rules included', async () => {
    const result = await runPromtool(['check', 'config', EXAMPLE_CONFIG], ROOT);
    expect(result.code, output(result)).to.equal(0);
    expect(result.stdout, output(result)).to.include('1 rule files found');
  });

  it('scrapes two instances in job switchboard, the job the rules expect', () => {
    const text = read(EXAMPLE_CONFIG);
    expect(text).to.match(/job_name: switchboard/);
    expect(text.match(/^\s+- [\w.-]+:\d+\s*$/gm) ?? []).to.have.length(2);
    expect(read(RULES)).to.include('up{job="switchboard"}');
  });
});

describe('the Grafana dashboard (config/grafana/switchboard.json)', function () {
  this.timeout(60_000);
  const dashboard = JSON.parse(read(DASHBOARD)) as GrafanaDashboard;
  const panels = allPanels(dashboard.panels).filter((p) => p.type !== 'row');
  const queries = dashboardQueries(dashboard);
  const recordNames = readRules(read(RULES))
    .filter((r) => r.kind === 'record')
    .map((r) => r.name);

  it('is a schemaVersion 39 model with a Prometheus datasource variable and a multi-value instance variable', () => {
    expect(dashboard.schemaVersion).to.equal(39);
    const datasource = dashboard.templating.list.find((v) => v.name === 'datasource');
    expect(datasource?.type).to.equal('datasource');
    expect(datasource?.query).to.equal('prometheus');
    const instance = dashboard.templating.list.find((v) => v.name === 'instance');
    expect(instance?.type).to.equal('query');
    expect(instance?.multi).to.equal(true);
    expect(instance?.includeAll).to.equal(true);
    expect(instance?.datasource?.uid).to.equal('${datasource}');
    const query = JSON.stringify(instance?.query);
    const source = /label_values\((\w+),\s*instance\)/.exec(query);
    expect(source, `instance variable query ${query}`).to.not.equal(null);
    expect(CONTRACT_METRICS).to.include(source?.[1]);
  });

  it('gives every panel at least one query, on the ${datasource} variable', () => {
    expect(panels.length).to.be.greaterThan(0);
    for (const panel of panels) {
      const where = `panel ${panel.id} "${panel.title}"`;
      expect((panel.targets ?? []).length, `${where} has no target`).to.be.greaterThan(0);
      expect(panel.datasource?.uid, where).to.equal('${datasource}');
      for (const target of panel.targets ?? []) {
        expect(target.expr ?? '', `${where} target ${target.refId ?? '?'}`).to.not.equal('');
        expect(target.datasource?.uid, where).to.equal('${datasource}');
      }
    }
    const ids = allPanels(dashboard.panels).map((p) => p.id);
    expect(new Set(ids).size, 'panel ids are unique').to.equal(ids.length);
  });

  it('has queries that promtool accepts once the variables are substituted', async () => {
    const exprs = queries.map((q) => substituteVariables(q.expr));
    for (const expr of exprs) expect(expr).to.not.include('$');
    const result = await checkAsRecordingRules(exprs);
    expect(result.code, output(result)).to.equal(0);
    expect(result.stdout, output(result)).to.include(`SUCCESS: ${exprs.length} rules found`);
  });

  it('uses only contract metrics, recording rules of rules.yml and default process metrics', () => {
    const allowed = new Set([...CONTRACT_METRICS, ...UNLEASH_METRICS, ...recordNames, ...DEFAULT_METRICS]);
    for (const { where, expr } of queries) {
      for (const name of metricNames(expr)) {
        expect(allowed.has(baseName(name)), `${where} uses unknown metric ${name}`).to.equal(true);
      }
    }
  });

  it('shows every contract metric', () => {
    const used = new Set(queries.flatMap((q) => metricNames(q.expr).map(baseName)));
    for (const metric of CONTRACT_METRICS) expect(used.has(metric), `no panel shows ${metric}`).to.equal(true);
  });

  describe('on a live Prometheus', () => {
    let prometheus: PrometheusProcess | undefined;
    before(async () => {
      prometheus = await startPrometheus({ scrapeTargets: [], rulesFiles: [join(ROOT, RULES)] });
    });
    after(async () => {
      await prometheus?.stop();
    });

    it('has queries that the query engine runs without error', async () => {
      for (const { where, expr } of queries) {
        const substituted = substituteVariables(expr);
        try {
          await prometheus?.query(substituted);
        } catch (err) {
          throw new Error(`${where}: ${(err as Error).message}\n${substituted}`);
        }
      }
    });
  });
});

describe('the PromQL helpers of this test', () => {
  it('find the metric names of an expression, not its functions, labels or keywords', () => {
    const expr =
      'sum by (backend) (rate(session_store_operations_total{outcome=~"error|timeout",instance=~".*"}[5m]))\n' +
      '  / ignoring (backend) group_left () sum(rate(session_backend_selected_total[5m] offset 1m)) > bool 1e6\n' +
      'and on (backend) backend:session_store_operations:rate5m';
    expect(metricNames(expr).sort()).to.deep.equal(
      ['backend:session_store_operations:rate5m', 'session_backend_selected_total', 'session_store_operations_total'].sort(),
    );
  });

  it('read a multi-line expr block', () => {
    const rules = readRules('groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: |\n          sum(x)\n            / sum(y)\n      - alert: A\n        expr: a:b:c > 1\n        for: 2m\n');
    expect(rules).to.deep.equal([
      { kind: 'record', name: 'a:b:c', expr: 'sum(x)\n/ sum(y)' },
      { kind: 'alert', name: 'A', expr: 'a:b:c > 1' },
    ]);
  });

  it('substitute Grafana variables, refusing unknown ones', () => {
    expect(substituteVariables('rate(x{instance=~"$instance"}[$__rate_interval]) + y{i=~"${instance:regex}"}[$__range]')).to.equal(
      'rate(x{instance=~".*"}[5m]) + y{i=~".*"}[5m]',
    );
    expect(() => substituteVariables('x{job="$job"}')).to.throw(/unknown Grafana variable \$job/);
  });
});
