import { expect } from 'chai';
import { describeSession } from '../../src/sessions/session.js';
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
