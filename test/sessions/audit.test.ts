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

  it('writes the rows in the order they were recorded, not the order their writes failed', async () => {
    const events = db.models.SessionEvent;
    const create = events.create;
    let calls = 0;
    // The first write fails late (a connection that hangs), the second at once (refused).
    events.create = (async () => {
      const call = ++calls;
      await new Promise((resolve) => setTimeout(resolve, call === 1 ? 200 : 0));
      throw new Error('database unavailable');
    }) as unknown as typeof events.create;
    const audit = new SessionAudit(db.models, pino({ level: 'silent' }));
    try {
      audit.record(undefined, { type: 'destroyed', userId: 4242, reason: 'logout' });
      audit.record(undefined, { type: 'revoked', userId: 4242, reason: 'admin', actor: 'admin', count: 0 });
      await waitUntil('both writes failed', () => calls === 2);
      events.create = create;
      const rows = async () => events.findAll({ where: { userId: 4242 }, order: [['id', 'ASC']] });
      await waitUntil('the kept rows written', async () => (await rows()).length === 2, 100);
      expect((await rows()).map((r) => r.type)).to.deep.equal(['destroyed', 'revoked']);
    } finally {
      events.create = create;
      await audit.close();
    }
  });

  it('writes no row before one recorded earlier whose first write is still waiting, and none recorded meanwhile before the kept ones', async () => {
    const events = db.models.SessionEvent;
    const create = events.create;
    let calls = 0;
    const failed: number[] = [];
    // The first write hangs past the retry of the second (a dead connection, then a query
    // timeout); the database is back meanwhile, and takes the retry.
    events.create = (async () => {
      const call = ++calls;
      await new Promise((resolve) => setTimeout(resolve, call === 1 ? 2_500 : 0));
      failed.push(call);
      throw new Error('database unavailable');
    }) as unknown as typeof events.create;
    const audit = new SessionAudit(db.models, pino({ level: 'silent' }));
    try {
      audit.record(undefined, { type: 'destroyed', userId: 4343, reason: 'logout' });
      audit.record(undefined, { type: 'revoked', userId: 4343, reason: 'admin', actor: 'admin', count: 0 });
      await waitUntil('the second write failed', () => failed.includes(2));
      events.create = create;
      audit.record(undefined, { type: 'created', userId: 4343, reason: null });
      const rows = async () => events.findAll({ where: { userId: 4343 }, order: [['id', 'ASC']] });
      await waitUntil('the first write failed', () => failed.includes(1), 100);
      await waitUntil('the kept rows written', async () => (await rows()).length === 3, 100);
      expect((await rows()).map((r) => r.type)).to.deep.equal(['destroyed', 'revoked', 'created']);
    } finally {
      events.create = create;
      await audit.close();
    }
  });
});
