import { expect } from 'chai';
import { RETURN_GRACE_MS, RollbackGuard, type RollbackState } from '../../src/flags/rollback.js';

const options = { enabled: true, errorRate: 0.05, latencyFactor: 2, latencyFloorMs: 5, windowMs: 60_000, minSamples: 100 };

function guard() {
  const fired: RollbackState[] = [];
  return { g: new RollbackGuard(options, (s) => fired.push(s)), fired };
}

describe('automatic rollback', () => {
  const t0 = 1_700_000_000_000;

  it('rolls back when the new backend’s error ratio passes the threshold', () => {
    const { g, fired } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.0005, t0);
    g.evaluate(t0);
    g.noteMigration('database', 'redis');
    for (let i = 0; i < 100; i++) g.record('redis', i >= 10, 0.0003, t0 + 1000);
    const state = g.evaluate(t0 + 1000);
    expect(state).to.deep.include({ from: 'redis', to: 'database', trigger: 'error_rate' });
    expect(fired).to.have.length(1);
    expect(g.redirect('redis')).to.equal('database');
    expect(g.redirect('cookie')).to.equal('cookie');
  });

  it('does not put a backend on probation when its own sessions return to it after an outage', () => {
    const { g, fired } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.0005, t0);
    g.evaluate(t0);
    g.noteFallback('redis', t0); // Redis failed; its sessions went to the database
    g.noteMigration('database', 'redis', t0 + 5000); // back home
    for (let i = 0; i < 100; i++) g.record('redis', false, 0.1, t0 + 6000); // and failing again
    expect(g.evaluate(t0 + 6000)).to.equal(undefined);
    expect(fired).to.have.length(0);
    // Long after the outage, a move to it is a rollout again; so it is at once after an operator's change.
    g.noteMigration('database', 'redis', t0 + RETURN_GRACE_MS + 1);
    for (let i = 0; i < 100; i++) g.record('redis', false, 0.1, t0 + 7000);
    expect(g.evaluate(t0 + 7000)).to.deep.include({ from: 'redis', trigger: 'error_rate' });
    const other = guard().g;
    other.noteFallback('redis', t0);
    other.clear();
    other.noteMigration('database', 'redis', t0 + 1);
    for (let i = 0; i < 100; i++) other.record('redis', false, 0.1, t0 + 1000);
    expect(other.evaluate(t0 + 1000)).to.deep.include({ from: 'redis', trigger: 'error_rate' });
  });

  it('ends the probation of a rollout that an outage interrupted, once the backend is back', () => {
    const { g, fired } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.001, t0);
    g.evaluate(t0);
    g.noteMigration('database', 'redis', t0); // an operator's rollout to Redis
    for (let i = 0; i < 100; i++) g.record('redis', true, 0.0005, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.equal(undefined);
    g.noteFallback('redis', t0 + 2000); // Redis went down; its breaker opened
    g.forget('redis', t0 + 30_000); // and closed again
    g.noteMigration('database', 'redis', t0 + 30_100); // its sessions go home
    // Its first calls after the restart are slow (a cold Redis, reconnecting clients).
    for (let i = 0; i < 100; i++) g.record('redis', true, i < 10 ? 0.05 : 0.0005, t0 + 31_000);
    expect(g.evaluate(t0 + 31_000)).to.equal(undefined);
    expect(fired).to.have.length(0);
    // A move after the grace is a rollout again, judged on its own calls.
    g.noteMigration('database', 'redis', t0 + 30_000 + RETURN_GRACE_MS + 1);
    for (let i = 0; i < 100; i++) g.record('redis', false, 0.0005, t0 + 30_000 + RETURN_GRACE_MS + 1000);
    expect(g.evaluate(t0 + 30_000 + RETURN_GRACE_MS + 1000)).to.deep.include({ from: 'redis', trigger: 'error_rate' });
  });

  it('rolls back when the new backend’s p99 passes twice the old one’s', () => {
    const { g } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.001, t0);
    g.evaluate(t0);
    g.noteMigration('database', 'redis');
    for (let i = 0; i < 200; i++) g.record('redis', true, i < 190 ? 0.0005 : 0.01, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.deep.include({ trigger: 'latency', from: 'redis', to: 'database' });
  });

  it('judges a rollout from the cookie backend by its error rate alone (a cookie has no round trip to compare with)', () => {
    const { g } = guard();
    for (let i = 0; i < 200; i++) g.record('cookie', true, 0.00005, t0);
    g.evaluate(t0);
    g.noteMigration('cookie', 'database', t0);
    for (let i = 0; i < 200; i++) g.record('database', true, 0.07, t0 + 1000);
    expect(g.evaluate(t0 + 1000), 'a busy database, 1400× slower than opening a cookie').to.equal(undefined);
    for (let i = 0; i < 100; i++) g.record('database', false, 0.07, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.deep.include({ from: 'database', to: 'cookie', trigger: 'error_rate' });
  });

  it('judges a rollout to the cookie backend by its error rate alone (its p99 is the event loop’s stalls, not a store’s)', () => {
    const { g } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.005, t0);
    g.evaluate(t0);
    g.noteMigration('database', 'cookie', t0);
    // 99 % of the cookie's calls under a millisecond; a few caught behind a busy event loop.
    for (let i = 0; i < 200; i++) g.record('cookie', true, i < 190 ? 0.0005 : 0.04, t0 + 1000);
    expect(g.evaluate(t0 + 1000), 'a cookie p99 of 40 ms against the database’s 5 ms').to.equal(undefined);
    for (let i = 0; i < 100; i++) g.record('cookie', false, 0.0005, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.deep.include({ from: 'cookie', to: 'database', trigger: 'error_rate' });
  });

  it('does not undo a retreat to the fallback for its latency, only for its errors', () => {
    const g = new RollbackGuard({ ...options, fallback: 'database' }, () => undefined);
    for (let i = 0; i < 200; i++) g.record('redis', true, 0.02, t0);
    g.evaluate(t0);
    g.noteMigration('redis', 'database', t0);
    for (let i = 0; i < 200; i++) g.record('database', true, 0.09, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.equal(undefined);
    for (let i = 0; i < 100; i++) g.record('database', false, 0.09, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.deep.include({ from: 'database', to: 'redis', trigger: 'error_rate' });
  });

  it('judges a move on the samples since it began, not on what the backend did before', () => {
    const { g } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.0005, t0);
    for (let i = 0; i < 200; i++) g.record('redis', false, 0.0005, t0); // errors from an earlier episode
    g.evaluate(t0);
    g.noteMigration('database', 'redis', t0 + 1000);
    for (let i = 0; i < 50; i++) g.record('redis', true, 0.0005, t0 + 1000);
    expect(g.evaluate(t0 + 1000), 'too few samples since the move').to.equal(undefined);
    for (let i = 0; i < 100; i++) g.record('redis', true, 0.0005, t0 + 1000);
    expect(g.evaluate(t0 + 1000), 'healthy since the move').to.equal(undefined);
  });

  it('ignores a slower p99 that is still below the latency floor', () => {
    const { g } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.0001, t0);
    g.evaluate(t0);
    g.noteMigration('database', 'redis');
    for (let i = 0; i < 200; i++) g.record('redis', true, 0.002, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.equal(undefined);
  });

  it('does not roll back on a healthy new backend, nor on too few samples', () => {
    const { g, fired } = guard();
    for (let i = 0; i < 200; i++) g.record('database', true, 0.001, t0);
    g.evaluate(t0);
    g.noteMigration('database', 'redis');
    for (let i = 0; i < 50; i++) g.record('redis', false, 0.05, t0 + 1000);
    expect(g.evaluate(t0 + 1000)).to.equal(undefined, 'below the minimum sample count');
    const { g: healthy } = guard();
    for (let i = 0; i < 200; i++) healthy.record('database', true, 0.001, t0);
    healthy.evaluate(t0);
    healthy.noteMigration('database', 'redis');
    for (let i = 0; i < 300; i++) healthy.record('redis', i % 100 !== 0, 0.0012, t0 + 1000);
    expect(healthy.evaluate(t0 + 1000)).to.equal(undefined);
    expect(fired).to.deep.equal([]);
  });

  it('forgets samples older than the window', () => {
    const { g } = guard();
    g.noteMigration('database', 'redis');
    for (let i = 0; i < 200; i++) g.record('redis', false, 0.001, t0);
    expect(g.evaluate(t0 + 61_000)).to.equal(undefined);
  });

  it('stays rolled back until an operator clears it', () => {
    const { g } = guard();
    g.noteMigration('database', 'redis');
    for (let i = 0; i < 200; i++) g.record('redis', false, 0.001, t0);
    g.evaluate(t0);
    for (let i = 0; i < 1000; i++) g.record('redis', true, 0.0001, t0 + 2000);
    g.evaluate(t0 + 2000);
    expect(g.redirect('redis')).to.equal('database');
    g.clear();
    expect(g.redirect('redis')).to.equal('redis');
    expect(g.state).to.equal(undefined);
  });
});
