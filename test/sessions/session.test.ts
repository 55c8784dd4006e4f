import { expect } from 'chai';
import { describeSession, MAX_SESSION_VERSION, MOVE_OUT_STEP, movedVersion } from '../../src/sessions/session.js';
import { makeRecord } from './fixtures.js';

describe('describeSession', () => {
  it('shows every time as ISO 8601 UTC, the same for a time seen before and past its memo bound', () => {
    const base = Date.UTC(2026, 11, 3, 7, 30, 0, 0);
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 12_000; i += 7) {
        const record = makeRecord({ createdAt: base + i, lastActivity: base + i * 1_000 + 1, expiresAt: base + i * 86_400_001 });
        const shown = describeSession(record);
        expect(shown.createdAt).to.equal(new Date(record.createdAt).toISOString());
        expect(shown.lastActivity).to.equal(new Date(record.lastActivity).toISOString());
        expect(shown.expiresAt).to.equal(new Date(record.expiresAt).toISOString());
      }
    }
    expect(describeSession(makeRecord({ createdAt: 0 })).createdAt).to.equal('1970-01-01T00:00:00.000Z');
  });
});

describe('movedVersion', () => {
  it('steps a move out of Redis or the cookie by MOVE_OUT_STEP, one out of the database by one', () => {
    expect(movedVersion('redis', 10)).to.equal(10 + MOVE_OUT_STEP);
    expect(movedVersion('cookie', 10)).to.equal(10 + MOVE_OUT_STEP);
    expect(movedVersion('database', 10)).to.equal(11);
  });

  it('never steps past what the sessions table holds (PostgreSQL INTEGER): near it, a move writes the next version', () => {
    // Past it, the move failed on every request (503) and opened the database breaker for everyone.
    expect(MAX_SESSION_VERSION).to.equal(2 ** 31 - 1);
    for (const read of [MAX_SESSION_VERSION - MOVE_OUT_STEP, MAX_SESSION_VERSION - MOVE_OUT_STEP + 1, MAX_SESSION_VERSION - 1]) {
      expect(movedVersion('redis', read)).to.be.at.most(MAX_SESSION_VERSION).and.above(read);
    }
    expect(movedVersion('redis', MAX_SESSION_VERSION - MOVE_OUT_STEP)).to.equal(MAX_SESSION_VERSION);
    expect(movedVersion('redis', MAX_SESSION_VERSION - 5)).to.equal(MAX_SESSION_VERSION - 4);
  });
});
