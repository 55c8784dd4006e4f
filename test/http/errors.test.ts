/**
 * The error codes API.md names (`400 invalid_input`, `403 … csrf_failed`, …) each exist as an
 * error the API can answer with, under the same status; and every code is stable snake_case.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as errors from '../../src/http/errors.js';

const API_MD = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'API.md');

function documentedCodes(): Array<[number, string]> {
  const text = readFileSync(API_MD, 'utf8');
  const found = new Map<string, number>();
  for (const m of text.matchAll(/`(\d{3}) ([a-z][a-z0-9_]*)`/g)) found.set(m[2]!, Number(m[1]));
  for (const m of text.matchAll(/(\d{3}) \{"error":\{"code":"([a-z][a-z0-9_]*)"/g)) found.set(m[2]!, Number(m[1]));
  return [...found].map(([code, status]) => [status, code]);
}

function answerable(): Array<[number, string]> {
  const out: Array<[number, string]> = [];
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function' || !(value.prototype instanceof errors.HttpError)) continue;
    const Ctor = value as unknown as new (...args: unknown[]) => errors.HttpError;
    const e = new Ctor('x', 'x');
    out.push([e.status, e.code]);
  }
  return out;
}

describe('the error codes of the contract', () => {
  it('API.md names at least the codes this suite relies on', () => {
    const codes = documentedCodes().map(([, c]) => c);
    expect(codes).to.include.members(['invalid_input', 'email_taken', 'invalid_credentials', 'too_many_attempts', 'csrf_failed', 'not_found']);
  });

  it('has an error for every documented status and code', () => {
    const have = answerable().map(([s, c]) => `${s} ${c}`);
    for (const [status, code] of documentedCodes()) expect(have, `${status} ${code}`).to.include(`${status} ${code}`);
  });

  it('uses snake_case codes and 4xx/5xx statuses only', () => {
    for (const [status, code] of answerable()) {
      expect(code).to.match(/^[a-z][a-z0-9]*(_[a-z0-9]+)*$/);
      expect(status).to.be.within(400, 599);
    }
  });
});
