/**
 * A counter and a histogram for the series Switchboard updates on every request, registered on
 * prom-client's Registry, which formats and serves them exactly as it does its own metrics.
 *
 * Why not prom-client's own classes here: their `inc`/`observe` take a label object and, on
 * every call, validate it and hash it into a string (0.3 µs for a counter, 0.7 µs for a
 * histogram, measured here), four to six times per request (docs/performance.md, eighth
 * round). Here a label set is resolved once into a series object that the caller keeps, and
 * an update is a few additions. Only what Switchboard needs: fixed label names, no exemplars,
 * no timers. Everything not on the request path stays on prom-client's classes.
 */
import type { Metric, Registry } from 'prom-client';

type Labels = Record<string, string>;

interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

export class CounterSeries {
  value = 0;
  constructor(readonly labels: Labels) {}

  inc(by = 1) {
    this.value += by;
  }
}

export class HistogramSeries {
  /** Observations per bucket (not cumulative); the last slot is above the largest bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number) {
    // prom-client throws on these; a metric update must never fail a request, so it is dropped.
    if (!Number.isFinite(value)) return;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]! += 1;
    this.sum += value;
    this.count += 1;
  }
}

abstract class LabelledMetric<S extends { labels: Labels }> {
  readonly aggregator = 'sum';
  private readonly byKey = new Map<string, S>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    // The registry asks a metric only for name, type, get() and reset(): the shape below.
    registry.registerMetric(this as unknown as Metric);
  }

  abstract readonly type: 'counter' | 'histogram';
  protected abstract create(labels: Labels): S;
  protected abstract samples(series: S): Sample[];
  protected abstract clear(series: S): void;

  /** The series for these labels, made (at zero) on first use; keep it and update it directly. */
  series(labels: Labels): S {
    const missing = this.labelNames.find((n) => typeof labels[n] !== 'string');
    if (missing !== undefined || Object.keys(labels).length !== this.labelNames.length) {
      throw new Error(`${this.name}: labels must be exactly ${this.labelNames.join(', ')}`);
    }
    const key = this.labelNames.map((n) => labels[n]).join('\u0000');
    let series = this.byKey.get(key);
    if (!series) {
      series = this.create(Object.fromEntries(this.labelNames.map((n) => [n, labels[n]!])));
      this.byKey.set(key, series);
    }
    return series;
  }

  async get() {
    const values: Sample[] = [];
    for (const series of this.byKey.values()) values.push(...this.samples(series));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** As prom-client's reset(): counts start again from zero (the series stay listed, at 0). */
  reset() {
    for (const series of this.byKey.values()) this.clear(series);
  }
}

export class LabelledCounter extends LabelledMetric<CounterSeries> {
  readonly type = 'counter';

  protected create(labels: Labels) {
    return new CounterSeries(labels);
  }
  protected samples(s: CounterSeries): Sample[] {
    return [{ value: s.value, labels: s.labels }];
  }
  protected clear(s: CounterSeries) {
    s.value = 0;
  }
}

export class LabelledHistogram extends LabelledMetric<HistogramSeries> {
  readonly type = 'histogram';

  constructor(name: string, help: string, labelNames: readonly string[], registry: Registry, readonly buckets: readonly number[]) {
    if (labelNames.includes('le')) throw new Error(`${name}: le is reserved for the bucket bound`);
    super(name, help, labelNames, registry);
  }

  protected create(labels: Labels) {
    return new HistogramSeries(labels, this.buckets);
  }
  protected samples(s: HistogramSeries): Sample[] {
    const bucket = `${this.name}_bucket`;
    const out: Sample[] = [];
    let cumulative = 0;
    this.buckets.forEach((le, i) => {
      cumulative += s.counts[i]!;
      out.push({ metricName: bucket, labels: { ...s.labels, le }, value: cumulative });
    });
    out.push({ metricName: bucket, labels: { ...s.labels, le: '+Inf' }, value: s.count });
    out.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
    out.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
    return out;
  }
  protected clear(s: HistogramSeries) {
    s.counts.fill(0);
    s.sum = 0;
    s.count = 0;
  }
}
