/**
 * The login limiter on its own: attempts beyond the points left wait for an attempt in flight
 * to end, and are refused (429) once they have waited `attemptWaitMs`. The HTTP tests
 * (login-burst, in-flight-races) cover bursts through the app; a wait that runs out needs a
 * password check held open, which only this level can do.
 */
import { expect } from 'chai';
import { LoginLimiter, type LoginAttempt } from '../../src/auth/login-limiter.js';
import { TooManyAttemptsError } from '../../src/http/errors.js';

const limits = { maxFailures: 2, maxFailuresPerIp: 100, maxFailuresPerAccount: 100, windowSeconds: 900 };

/** Settles to 'waiting' while the attempt has neither got its points nor been refused. */
async function stateOf(pending: Promise<LoginAttempt>): Promise<'in' | 'refused' | 'waiting'> {
  const tick = new Promise<'waiting'>((resolve) => setImmediate(() => resolve('waiting')));
  return Promise.race([
    pending.then(
      () => 'in' as const,
      (err: unknown) => (err instanceof TooManyAttemptsError ? ('refused' as const) : Promise.reject(err)),
    ),
    tick,
  ]);
}

describe('LoginLimiter', () => {
  it('lets an attempt beyond the points left in once an attempt in flight ends with the right password', async () => {
    const limiter = new LoginLimiter(limits);
    const first = await limiter.attempt('ann@example.com', '10.0.0.1');
    await limiter.attempt('ann@example.com', '10.0.0.1');
    const third = limiter.attempt('ann@example.com', '10.0.0.1');
    expect(await stateOf(third), 'while two checks hold both points').to.equal('waiting');

    await first.succeeded();
    expect(await stateOf(third), 'once one of them was right').to.equal('in');
  });

  it('refuses an attempt with 429 and Retry-After once it has waited attemptWaitMs for a point', async () => {
    const limiter = new LoginLimiter({ ...limits, attemptWaitMs: 50 });
    const held = [await limiter.attempt('bob@example.com', '10.0.0.2'), await limiter.attempt('bob@example.com', '10.0.0.2')];
    const err = await limiter.attempt('bob@example.com', '10.0.0.2').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(TooManyAttemptsError);
    const refused = err as TooManyAttemptsError;
    expect(refused.status).to.equal(429);
    expect(Number(refused.headers['Retry-After'])).to.be.at.least(1);

    // The refusal took nothing: once the held checks end, the next attempt gets straight in.
    for (const attempt of held) attempt.release();
    expect(await stateOf(limiter.attempt('bob@example.com', '10.0.0.2'))).to.equal('in');
  });

  it('refuses at once, without waiting, when failures have spent the counter', async () => {
    const limiter = new LoginLimiter({ ...limits, attemptWaitMs: 60_000 });
    for (let i = 0; i < limits.maxFailures; i++) await (await limiter.attempt('cy@example.com', '10.0.0.3')).failed();
    expect(await stateOf(limiter.attempt('cy@example.com', '10.0.0.3'))).to.equal('refused');
    // Another address is a different account+address counter.
    expect(await stateOf(limiter.attempt('cy@example.com', '10.0.0.4'))).to.equal('in');
  });
});
