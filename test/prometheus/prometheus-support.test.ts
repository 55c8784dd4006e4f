/**
 * Self-test of test/support/prometheus.ts: a real Prometheus scraping its own /metrics (and a
 * port nobody listens on), with the shipped rules shortened.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import {
  SHORT_FOR,
  SHORT_WINDOW,
  shortenWindows,
  startPrometheus,
  type Alert,
  type PrometheusProcess,
  type Sample,
} from '../support/prometheus.js';

const RULES = fileURLToPath(new URL('../../config/prometheus/rules.yml', import.meta.url));

describe('test support: startPrometheus', function () {
  this.timeout(60_000);
  let prometheus: PrometheusProcess | undefined;
  let self = '';
  // nothing listens there: its scrapes fail, so SwitchboardScrapeFailed must fire for it
  let dead = '';

  before(async () => {
    const port = await freePort();
    self = `127.0.0.1:${port}`;
    dead = `127.0.0.1:${await freePort()}`;
    prometheus = await startPrometheus({ port, scrapeTargets: [self, dead], rulesFiles: [RULES], shortenWindows: true });
  });
  after(async () => {
    await prometheus?.stop();
  });

  it('listens on 127.0.0.1', () => {
    expect(prometheus?.url).to.equal(`http://${self}`);
  });

  it('scrapes its targets: up is 1 for itself and 0 for a dead target', async () => {
    await prometheus?.waitForScrapes();
    const up = (await prometheus?.query('up{job="switchboard"}')) ?? [];
    const byInstance = Object.fromEntries(up.map((s: Sample) => [s.metric.instance, s.value[1]]));
    expect(byInstance).to.deep.equal({ [self]: '1', [dead]: '0' });
  });

  it('loads the shipped rules with shortened windows', async () => {
    const response = await fetch(`${prometheus?.url}/api/v1/rules`);
    const body = (await response.json()) as { data: { groups: Array<{ rules: Array<{ name: string; query: string; duration?: number }> }> } };
    const rules = body.data.groups.flatMap((g) => g.rules);
    const errorAlert = rules.find((r) => r.name === 'SessionStoreErrorRatioHigh');
    expect(errorAlert?.duration).to.equal(3);
    expect(errorAlert?.query).to.include('backend:session_store_error_ratio:rate5m > 0.05');
    const ratio = rules.find((r) => r.name === 'backend:session_store_error_ratio:rate5m');
    expect(ratio?.query).to.include('[15s]').and.not.include('[5m]');
  });

  it('reports firing alerts: SwitchboardScrapeFailed for the dead target only', async () => {
    let firing: Alert[] = [];
    // `for: 3s` once shortened, evaluated every second: at most 300 polls of 100 ms
    for (let attempt = 0; attempt < 300 && firing.length === 0; attempt++) {
      firing = ((await prometheus?.alerts()) ?? []).filter((a) => a.state === 'firing');
      if (firing.length === 0) await sleep(100);
    }
    expect(firing.map((a) => [a.labels.alertname, a.labels.instance])).to.deep.equal([['SwitchboardScrapeFailed', dead]]);
    expect(firing[0]?.annotations.summary).to.equal(`Switchboard instance ${dead} cannot be scraped`);
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
