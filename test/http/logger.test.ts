/**
 * What the log keeps of an error. A failed database write must not put the statement's bound
 * values in the log: for the sessions table they are a session's data, CSRF token included.
 */
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { Sequelize } from 'sequelize';
import { createLogger } from '../../src/app.js';
import { RepeatedWarning } from '../../src/logging/repeated-warning.js';
import { redisCommand, startRedis } from '../support/redis-server.js';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { logger: createLogger({ logLevel: 'info' }, stream), text: () => lines.join('') };
}

describe('the log', () => {
  it("keeps a database error's type, message and code, never its statement or bound values", async () => {
    const secret = 'csrf-token-that-must-not-be-logged';
    const db = new Sequelize({ dialect: 'sqlite', storage: ':memory:', logging: false });
    try {
      await db.query('CREATE TABLE t (v TEXT NOT NULL UNIQUE)');
      await db.query('INSERT INTO t (v) VALUES (?)', { replacements: [secret] });
      const err = await db.query('INSERT INTO t (v) VALUES (?)', { replacements: [secret] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'the second insert fails').to.be.instanceOf(Error);
      const { logger, text } = capture();
      logger.warn({ err }, 'could not write');
      const line = JSON.parse(text()) as { err: Record<string, unknown> };
      expect(line.err.type).to.equal('UniqueConstraintError');
      expect(String(line.err.message)).to.match(/unique|validation/i);
      expect(text()).to.not.include(secret);
      expect(text()).to.not.include('INSERT');
    } finally {
      await db.close();
    }
  });

  it('logs other errors in full, as pino does', () => {
    const { logger, text } = capture();
    logger.error({ err: Object.assign(new Error('the broker went away'), { code: 'ECONNRESET' }) }, 'lost');
    const line = JSON.parse(text()) as { err: Record<string, unknown> };
    expect(line.err).to.include({ type: 'Error', message: 'the broker went away', code: 'ECONNRESET' });
    expect(line.err.stack).to.be.a('string');
  });

  it("keeps a Redis error's message, never the command it carries: a wrong password is not logged", async function () {
    this.timeout(30_000);
    const redis = await startRedis();
    await redisCommand(redis.port, ['CONFIG', 'SET', 'requirepass', 'the-right-one-0123456789']);
    const client = new Redis(`redis://:Wrong-Password-Not-To-Log@127.0.0.1:${redis.port}/0`, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      const err = await new Promise<unknown>((resolve) => {
        client.once('error', resolve);
        client.connect().catch(resolve);
      });
      expect(JSON.stringify(Object.entries(err as object)), 'ioredis hangs the command on its error').to.include('Wrong-Password-Not-To-Log');
      const { logger, text } = capture();
      logger.warn({ err }, 'instance channel error');
      const line = JSON.parse(text()) as { err: Record<string, unknown> };
      expect(String(line.err.message)).to.match(/WRONGPASS|invalid password/i);
      expect(text()).to.not.include('Wrong-Password-Not-To-Log');
    } finally {
      client.disconnect();
      await redis.stop();
    }
  });

  it('tells how many it left out at the end of an outage one interval after its last line, not on the next outage’s first line', async () => {
    const { logger, text } = capture();
    const copyFailed = new RepeatedWarning(logger, 'database copy of a session could not be written', 50);
    const began = Date.now();
    for (let i = 0; i < 5; i++) copyFailed.warn({ err: new Error('connection refused'), operation: 'save' });
    const ended = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 150));
    const lines = text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.operation, l.alsoSinceLastLine])).to.deep.equal([
      ['save', undefined],
      ['save', 3],
    ]);
    // Written after the failures stopped (the backend may be back by then): it says when the last was.
    expect(Date.parse(String(lines[1]!.lastAt)), 'the time of the last one left out').to.be.within(began, ended);
  });

  it('says a warning repeated by every request of an outage once per interval, with how many it left out', () => {
    const { logger, text } = capture();
    const copyFailed = new RepeatedWarning(logger, 'database copy of a session could not be written', 10_000);
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 500; i++) copyFailed.warn({ err: new Error('connection refused'), operation: 'save' }, t0 + i * 10);
    copyFailed.warn({ err: new Error('connection refused'), operation: 'save' }, t0 + 10_000);
    const lines = text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.msg, l.operation, l.alsoSinceLastLine])).to.deep.equal([
      ['database copy of a session could not be written', 'save', undefined],
      ['database copy of a session could not be written', 'save', 499],
    ]);
    expect((lines[1]!.err as Record<string, unknown>).message, 'each line keeps its error').to.equal('connection refused');
  });

  it('goes on logging once per interval after the system clock steps back (an NTP step, a restored VM)', async () => {
    const { logger, text } = capture();
    const copyFailed = new RepeatedWarning(logger, 'database copy of a session could not be written', 50);
    const realNow = Date.now;
    try {
      copyFailed.warn({ operation: 'save' });
      const stepped = realNow() - 86_400_000;
      Date.now = () => stepped + (performance.now() % 1000);
      await new Promise((resolve) => setTimeout(resolve, 100));
      copyFailed.warn({ operation: 'touch' });
    } finally {
      Date.now = realNow;
    }
    const operations = text()
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as Record<string, unknown>).operation);
    expect(operations, 'a day back, the next interval’s line still comes').to.deep.equal(['save', 'touch']);
  });
});
