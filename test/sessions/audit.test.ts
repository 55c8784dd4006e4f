/**
 * The audit trail while the database fails (src/sessions/audit.ts): rows it could not take are
 * written later in the order they happened, whatever order their writes failed in — one write
 * can wait on a dead connection while the next fails at once.
 */
import { expect } from 'chai';
import pino from 'pino';
import { SessionAudit } from '../../src/sessions/audit.js';
import { waitUntil } from '../support/redis-server.js';
import { sqliteDb, type TestDb } from './fixtures.js';

describe('the audit trail after failed writes', function () {
  this.timeout(30_000);
  let db: TestDb;
  before(async () => {
    db = await sqliteDb();
  });
  after(() => db?.close());

  /**
   * Makes the audit's first writes fail, the first one after `firstFailsAfterMs` (a connection
   * that hangs), the others at once (refused); `back()` lets writes through again.
   */
  function failingWrites(firstFailsAfterMs: number) {
    const events = db.models.SessionEvent;
    const create = events.create;
    const failed: number[] = [];
    let calls = 0;
    events.create = (async () => {
      const call = ++calls;
      await new Promise((resolve) => setTimeout(resolve, call === 1 ? firstFailsAfterMs : 0));
      failed.push(call);
      throw new Error('database unavailable');
    }) as unknown as typeof events.create;
    return {
      failed,
      back: () => {
        events.create = create;
      },
      rows: (userId: number) => events.findAll({ where: { userId }, order: [['id', 'ASC']] }),
    };
  }

  it('writes the rows in the order they were recorded, not the order their writes failed', async () => {
    const writes = failingWrites(200);
    const audit = new SessionAudit(db.models, pino({ level: 'silent' }));
    try {
      audit.record(undefined, { type: 'destroyed', userId: 4242, reason: 'logout' });
      audit.record(undefined, { type: 'revoked', userId: 4242, reason: 'admin', actor: 'admin', count: 0 });
      await waitUntil('both writes failed', () => writes.failed.length === 2);
      writes.back();
      await waitUntil('the kept rows written', async () => (await writes.rows(4242)).length === 2, 100);
      expect((await writes.rows(4242)).map((r) => r.type)).to.deep.equal(['destroyed', 'revoked']);
    } finally {
      writes.back();
      await audit.close();
    }
  });

  it('writes no row before one recorded earlier whose first write is still waiting, and none recorded meanwhile before the kept ones', async () => {
    // The first write hangs past the retry of the second (a dead connection, then a query
    // timeout); the database is back meanwhile, and takes the retry.
    const writes = failingWrites(2_500);
    const audit = new SessionAudit(db.models, pino({ level: 'silent' }));
    try {
      audit.record(undefined, { type: 'destroyed', userId: 4343, reason: 'logout' });
      audit.record(undefined, { type: 'revoked', userId: 4343, reason: 'admin', actor: 'admin', count: 0 });
      await waitUntil('the second write failed', () => writes.failed.includes(2));
      writes.back();
      audit.record(undefined, { type: 'created', userId: 4343, reason: null });
      await waitUntil('the first write failed', () => writes.failed.includes(1), 100);
      await waitUntil('the kept rows written', async () => (await writes.rows(4343)).length === 3, 100);
      expect((await writes.rows(4343)).map((r) => r.type)).to.deep.equal(['destroyed', 'revoked', 'created']);
    } finally {
      writes.back();
      await audit.close();
    }
  });
});
