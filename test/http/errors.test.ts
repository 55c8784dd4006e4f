/**
 * The error catalogue (src/http/errors.ts) against the contract and the docs: every code
 * API.md names is one we raise, and README lists every code we raise.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { PARSER_REFUSALS } from '../../src/http/client-errors.js';
import { FOR_STATUS } from '../../src/http/error-handler.js';
import * as errors from '../../src/http/errors.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

function ourCodes(): Set<string> {
  const codes = new Set<string>();
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function' || !(value.prototype instanceof errors.HttpError)) continue;
    const Ctor = value as unknown as new (...args: unknown[]) => errors.HttpError;
    codes.add(new Ctor('x', 1).code);
  }
  for (const [code] of Object.values(FOR_STATUS)) codes.add(code);
  for (const [, code] of Object.values(PARSER_REFUSALS)) codes.add(code);
  return codes;
}

describe('the error catalogue', () => {
  it('raises every error code the API contract names', () => {
    const api = readFileSync(path.join(ROOT, '..', 'shared', 'API.md'), 'utf8');
    const named = new Set([...api.matchAll(/\b\d{3} `?([a-z]+(?:_[a-z]+)+)`?/g)].map((m) => m[1]!));
    named.add('csrf_failed');
    expect(named.size).to.be.greaterThan(4);
    const ours = ourCodes();
    for (const code of named) expect(ours.has(code), `API.md names ${code}`).to.equal(true);
  });

  it('is documented in README, code by code', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    for (const code of ourCodes()) expect(readme, `README lists ${code}`).to.include(`\`${code}\``);
  });

  it('uses stable snake_case codes', () => {
    for (const code of ourCodes()) expect(code).to.match(/^[a-z]+(_[a-z]+)*$/);
  });
});
