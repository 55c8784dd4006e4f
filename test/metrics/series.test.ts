import { expect } from 'chai';
import { Counter, Histogram, Registry } from 'prom-client';
import { LabelledCounter, LabelledHistogram } from '../../src/metrics/series.js';

/** The exposition's sample lines, each with its labels in name order: label order is not meaning. */
function sampleLines(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const m = /^(\w+)(?:\{(.*)\})? (.+)$/.exec(line);
      if (!m) throw new Error(`not a sample line: ${line}`);
      const labels = (m[2] ?? '').split(/,(?=\w+=")/).filter(Boolean).sort();
      return `${m[1]}{${labels.join(',')}} ${m[3]}`;
    })
    .sort();
}

describe('metrics: series resolved once (src/metrics/series.ts)', () => {
  const buckets = [0.001, 0.01, 0.1, 1];
  // Bounds themselves, values between and beyond them, zero, a very large value.
  const values = [0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1, 1.5, 1e9, 0.001];

  it('exposes a histogram exactly as prom-client does for the same observations (buckets, +Inf, sum, count)', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const histogram = new LabelledHistogram('h_seconds', 'help text', ['route', 'status'], ours, buckets);
    const reference = new Histogram({ name: 'h_seconds', help: 'help text', labelNames: ['route', 'status'], buckets, registers: [theirs] });
    for (const [i, v] of values.entries()) {
      const labels = { route: i % 2 ? '/a "quoted"\\path' : '/b', status: String(200 + (i % 3)) };
      histogram.series(labels).observe(v);
      reference.observe(labels, v);
    }
    const text = await ours.metrics();
    expect(sampleLines(text)).to.deep.equal(sampleLines(await theirs.metrics()));
    expect(text).to.include('# TYPE h_seconds histogram');
    expect(text).to.include('# HELP h_seconds help text');
  });

  it('exposes counters as prom-client does, series at 0 included, and resets to 0', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const counter = new LabelledCounter('c_total', 'c', ['backend', 'outcome'], ours);
    const reference = new Counter({ name: 'c_total', help: 'c', labelNames: ['backend', 'outcome'], registers: [theirs] });
    counter.series({ backend: 'redis', outcome: 'error' });
    reference.inc({ backend: 'redis', outcome: 'error' }, 0);
    const success = counter.series({ backend: 'redis', outcome: 'success' });
    success.inc();
    success.inc(2);
    reference.inc({ backend: 'redis', outcome: 'success' }, 3);
    expect(sampleLines(await ours.metrics())).to.deep.equal(sampleLines(await theirs.metrics()));
    expect(counter.series({ outcome: 'success', backend: 'redis' }), 'the same series for the same labels').to.equal(success);

    ours.resetMetrics();
    expect(sampleLines(await ours.metrics())).to.deep.equal(['c_total{backend="redis",outcome="error"} 0', 'c_total{backend="redis",outcome="success"} 0']);
  });

  it('refuses labels other than its own at resolution, and ignores a non-finite observation', async () => {
    const registry = new Registry();
    const histogram = new LabelledHistogram('x_seconds', 'x', ['route'], registry, buckets);
    expect(() => histogram.series({})).to.throw(/labels must be exactly route/);
    expect(() => histogram.series({ route: '/', extra: 'y' })).to.throw(/labels must be exactly route/);
    expect(() => new LabelledHistogram('y_seconds', 'y', ['le'], registry, buckets)).to.throw(/le is reserved/);
    const series = histogram.series({ route: '/' });
    series.observe(Number.NaN);
    series.observe(Number.POSITIVE_INFINITY);
    series.observe(0.05);
    expect(sampleLines(await registry.metrics())).to.include.members(['x_seconds_count{route="/"} 1', 'x_seconds_sum{route="/"} 0.05', 'x_seconds_bucket{le="0.1",route="/"} 1']);
  });
});
