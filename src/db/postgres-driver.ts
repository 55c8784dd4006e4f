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
 * the call that was making it fails as any call does when the database drops it.
 */
import pg from 'pg';

class ListeningClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    this.on('error', () => {
      (this as unknown as { _invalid: boolean })._invalid = true;
    });
  }
}

export const postgresDriver = { ...pg, Client: ListeningClient };
