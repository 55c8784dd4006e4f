/**
 * PostgreSQL ending a connection just as it became ready (a failover, a pooler restart, an
 * operator's pg_terminate_backend): its FATAL can reach the client in the same packet as
 * ReadyForQuery. A relay on loopback makes that certain: it holds the server's answers up to
 * ReadyForQuery, has the real server end that backend, and hands both on in one write.
 */
import { expect } from 'chai';
import net, { type AddressInfo } from 'node:net';
import type { Sequelize } from 'sequelize';
import { openDatabase } from '../../src/db/database.js';
import { migrateUp } from '../../src/db/migrator.js';
import { defineModels } from '../../src/db/models.js';
import { DatabaseStore } from '../../src/sessions/database-store.js';
import { makeRecord } from '../sessions/fixtures.js';
import { connectPostgres, createTestDatabase, type PgClient, type TestDatabase } from '../support/postgres.js';

interface Relay {
  port: number;
  /** Whether the connection picked out has been ended and its last packet delivered. */
  ended: boolean;
  close(): void;
}

/** Relays to 127.0.0.1:5432; the `endNth` connection (1-based) is ended as it becomes ready. */
async function relayEnding(endNth: number, admin: PgClient): Promise<Relay> {
  let count = 0;
  const sockets = new Set<net.Socket>();
  const relay: Relay = { port: 0, ended: false, close: () => undefined };
  const server = net.createServer((client) => {
    const upstream = net.connect(5432, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    if (++count !== endNth) {
      upstream.pipe(client);
      return;
    }
    // The server's startup answers, as messages: type byte, then a length that counts itself.
    let pending = Buffer.alloc(0);
    let pid: number | undefined;
    let held: Buffer | undefined;
    upstream.on('data', (chunk: Buffer) => {
      if (held) {
        // The FATAL that pg_terminate_backend made the server send: one write with ReadyForQuery.
        client.write(Buffer.concat([held, chunk]));
        held = Buffer.alloc(0);
        relay.ended = true;
        return;
      }
      if (relay.ended) return;
      pending = Buffer.concat([pending, chunk]);
      for (let at = 0; at + 5 <= pending.length; ) {
        const type = String.fromCharCode(pending[at]!);
        const end = at + 1 + pending.readInt32BE(at + 1);
        if (end > pending.length) break;
        if (type === 'K') pid = pending.readInt32BE(at + 5);
        if (type === 'Z') {
          held = pending.subarray(0, end);
          void admin.query('SELECT pg_terminate_backend($1)', [pid]);
          return;
        }
        at = end;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.port = (server.address() as AddressInfo).port;
  relay.close = () => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return relay;
}

describe('PostgreSQL ending a connection in the packet that says it is ready', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let admin: PgClient;
  let relay: Relay;
  let sequelize: Sequelize | undefined;

  before(async () => {
    db = await createTestDatabase('ended_when_ready');
    admin = await connectPostgres(db.url);
    admin.on('error', () => undefined);
    const direct = await openDatabase(db.url);
    await migrateUp(direct);
    await direct.close();
  });
  afterEach(async () => {
    await sequelize?.close().catch(() => undefined);
    sequelize = undefined;
    relay?.close();
  });
  after(async () => {
    await admin?.end().catch(() => undefined);
    await db?.drop();
  });

  it('costs at most the call that was opening it, not the process: the next calls are served', async () => {
    // Start-up's connections go through (Sequelize's version check, then the pool's first); the
    // third, opened for a second call while the first is busy, is ended as it becomes ready.
    // Before, pg emitted `error` on a client Sequelize had not yet listened to: an uncaught
    // exception, and the process ended.
    relay = await relayEnding(3, admin);
    sequelize = await openDatabase(db.url.replace(':5432/', `:${relay.port}/`));
    const calls = await Promise.allSettled([sequelize.query('SELECT pg_sleep(0.2)'), sequelize.query('SELECT 1')]);
    expect(relay.ended, 'the second connection was ended as it became ready').to.equal(true);
    expect(calls[0].status, 'the call on the first connection').to.equal('fulfilled');
    const [rows] = await sequelize.query('SELECT 2 AS two');
    expect(rows).to.deep.equal([{ two: 2 }]);
  });

  it('sends a session write again on another connection when its own was ended before the write went out', async () => {
    // The login's write asks the pool for a connection while the first is busy; the new one is
    // ended as it becomes ready, during Sequelize's set-up statements, before the write was sent.
    // Before, the write failed (a 503 for the login), though sending it again was safe.
    relay = await relayEnding(3, admin);
    sequelize = await openDatabase(db.url.replace(':5432/', `:${relay.port}/`));
    const store = new DatabaseStore(defineModels(sequelize));
    const record = makeRecord();
    const [busy, write] = await Promise.allSettled([sequelize.query('SELECT pg_sleep(0.2)'), store.create(record)]);
    expect(relay.ended, "the write's connection was ended as it became ready").to.equal(true);
    expect(busy.status).to.equal('fulfilled');
    expect(write.status, write.status === 'rejected' ? String(write.reason) : '').to.equal('fulfilled');
    expect((await store.load(record.id))?.data).to.deep.equal(record.data);
  });
});
