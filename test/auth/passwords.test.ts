/**
 * Password checks: an unknown email must cost what a known one costs, so that the time of a
 * 401 does not tell which emails have accounts. Counted in argon2 checks, not milliseconds (no
 * wall-clock thresholds on these machines): the same number of checks is the same time.
 */
import { expect } from 'chai';
import argon2 from 'argon2';
import { hashPassword, verifyPassword } from '../../src/auth/passwords.js';

describe('verifyPassword', function () {
  this.timeout(30_000);
  const realVerify = argon2.verify;
  let checks = 0;
  before(() => {
    argon2.verify = ((...args: Parameters<typeof realVerify>) => {
      checks++;
      return realVerify(...args);
    }) as typeof realVerify;
  });
  after(() => {
    argon2.verify = realVerify;
  });

  async function checksFor(hash: string | undefined, password: string) {
    checks = 0;
    const ok = await verifyPassword(hash, password);
    return { ok, checks };
  }

  for (const [what, typed] of [
    ['a plain password', 'wrong password 1'],
    ['a password that Unicode normalisation changes (full-width letters)', 'ｗｒｏｎｇ password 1'],
  ] as const) {
    it(`makes as many argon2 checks for an unknown email as for a wrong password of a known one: ${what}`, async () => {
      const known = await hashPassword('correct horse battery');
      const wrong = await checksFor(known, typed);
      const unknown = await checksFor(undefined, typed);
      expect(wrong.ok).to.equal(false);
      expect(unknown.ok).to.equal(false);
      expect(unknown.checks, 'checks for an unknown email').to.equal(wrong.checks);
    });
  }

  it('accepts the right password, in the spelling typed or its normalised form', async () => {
    const hash = await hashPassword('ｃorrect horse battery');
    expect((await checksFor(hash, 'ｃorrect horse battery')).ok).to.equal(true);
    expect((await checksFor(hash, 'correct horse battery')).ok).to.equal(true);
    expect((await checksFor(hash, 'correct horse battery!')).ok).to.equal(false);
  });
});
