/**
 * node-postgres as Sequelize is given it (`dialectModule`), with one difference: each client
 * listens for `error` from the moment it is made.
 *
 * Sequelize adds its own listener only once `connect()` has resolved, a turn later. A server that
 * ends a connection just as it became ready (a failover, a pooler restart, an operator's
 * `pg_terminate_backend`) can send its FATAL in the same packet as ReadyForQuery; pg reads both
 * in one go and emits `error` before that turn, with no listener: an uncaught exception, and the
 * process ended. Seen in CI, where a test ends every connection of its database in a loop.
 * The client is marked invalid, as Sequelize's own listener does, so the pool never lends it;
 * the call that was making it fails as any call does when the database drops it. And a second
 * difference: a client whose statement passed `query_timeout` is marked invalid too (`query`).
 */
import pg from 'pg';

class ListeningClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    this.on('error', () => this.invalidate());
  }

  /**
   * pg's `query_timeout` fails the call but leaves its statement running on the connection (the
   * server never answered it): lent again, the connection would run the next calls only after
   * it, each failing on its own timeout meanwhile. Marked invalid, as on an error, so that the
   * pool ends it instead of lending it.
   */
  override query(...args: unknown[]): never {
    const onTimeout = (err: unknown) => {
      if (err instanceof Error && err.message === 'Query read timeout') this.invalidate();
    };
    const last = args.at(-1);
    if (typeof last === 'function') {
      args[args.length - 1] = (err: unknown, ...rest: unknown[]) => {
        onTimeout(err);
        return (last as (...a: unknown[]) => unknown)(err, ...rest);
      };
    }
    const result = (super.query as (...a: unknown[]) => unknown).apply(this, args);
    if (result instanceof Promise) result.catch(onTimeout);
    return result as never;
  }

  private invalidate(): void {
    (this as unknown as { _invalid: boolean })._invalid = true;
  }
}

export const postgresDriver = { ...pg, Client: ListeningClient };
