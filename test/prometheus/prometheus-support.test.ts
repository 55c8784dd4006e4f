/**
 * Self-test of test/support/prometheus.ts: a real Prometheus scraping its own /metrics.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import { SHORT_FOR, SHORT_WINDOW, shortenWindows, startPrometheus, type PrometheusProcess, type Sample } from '../support/prometheus.js';

const RULES = fileURLToPath(new URL('../../config/prometheus/rules.yml', import.meta.url));

describe('test support: startPrometheus', function () {
  this.timeout(60_000);
  let prometheus: PrometheusProcess | undefined;

  before(async () => {
    const port = await freePort();
    prometheus = await startPrometheus({
      port,
      scrapeTargets: [`127.0.0.1:${port}`],
      rulesFiles: [RULES],
      shortenWindows: true,
    });
  });
  after(async () => {
    await prometheus?.stop();
  });

  it('listens on 127.0.0.1', () => {
    expect(prometheus?.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('scrapes its targets every second: up is 1 for itself', async () => {
    let up: Sample[] = [];
    // first scrape within about a second; at most 100 polls
    for (let attempt = 0; attempt < 100 && up.length === 0; attempt++) {
      up = (await prometheus?.query('up{job="switchboard"}')) ?? [];
      if (up.length === 0) await sleep(100);
    }
    expect(up).to.have.length(1);
    expect(up[0]?.value[1]).to.equal('1');
  });

  it('loads the shipped rules, shortened, and reports no alert for a healthy target', async () => {
    const response = await fetch(`${prometheus?.url}/api/v1/rules`);
    const body = (await response.json()) as { data: { groups: Array<{ name: string; rules: Array<{ name: string; query: string; duration?: number }> }> } };
    const rules = body.data.groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.name)).to.include.members(['SessionStoreErrorRatioHigh', 'backend:session_store_error_ratio:rate5m']);
    const errorAlert = rules.find((r) => r.name === 'SessionStoreErrorRatioHigh');
    expect(errorAlert?.duration).to.equal(3);
    expect(errorAlert?.query).to.include('backend:session_store_error_ratio:rate5m > 0.05');
    const ratio = rules.find((r) => r.name === 'backend:session_store_error_ratio:rate5m');
    expect(ratio?.query).to.include('[15s]').and.not.include('[5m]');
    expect(await prometheus?.alerts()).to.deep.equal([]);
  });

  it('rejects a query error with the message of Prometheus', async () => {
    let error: unknown;
    try {
      await prometheus?.query('sum(');
    } catch (err) {
      error = err;
    }
    expect(String(error)).to.match(/bad_data/);
  });

  it('is gone after stop()', async () => {
    const url = prometheus?.url ?? '';
    await prometheus?.stop();
    await prometheus?.stop(); // idempotent
    let refused = false;
    try {
      await fetch(`${url}/-/ready`);
    } catch {
      refused = true;
    }
    expect(refused).to.equal(true);
    prometheus = undefined;
  });
});

describe('test support: shortenWindows', () => {
  it('shortens range windows and non-zero for: durations, nothing else', () => {
    const rules = [
      '      - alert: A',
      '        expr: sum(rate(x_total[5m])) > 0 and increase(y_total[10m]) > 0 and z[1h] and w[30s]',
      '        for: 2m',
      '      - alert: B',
      '        expr: rate(x_total[5m]) > 0',
      '        for: 0s',
      '      - record: backend:x:rate5m',
      '        expr: rate(x_total[5m])',
    ].join('\n');
    expect(shortenWindows(rules)).to.equal(
      [
        '      - alert: A',
        `        expr: sum(rate(x_total[${SHORT_WINDOW}])) > 0 and increase(y_total[${SHORT_WINDOW}]) > 0 and z[${SHORT_WINDOW}] and w[30s]`,
        `        for: ${SHORT_FOR}`,
        '      - alert: B',
        `        expr: rate(x_total[${SHORT_WINDOW}]) > 0`,
        '        for: 0s',
        '      - record: backend:x:rate5m',
        `        expr: rate(x_total[${SHORT_WINDOW}])`,
      ].join('\n'),
    );
  });
});
