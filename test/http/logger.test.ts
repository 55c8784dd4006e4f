/**
 * What the log keeps of an error. A failed database write must not put the statement's bound
 * values in the log: for the sessions table they are a session's data, CSRF token included.
 */
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { Sequelize } from 'sequelize';
import { createLogger } from '../../src/app.js';

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
});
