import type { Sequelize } from 'sequelize';
import { SequelizeStorage, Umzug } from 'umzug';
import { migrations } from '../../migrations/index.js';

export function migrator(sequelize: Sequelize) {
  const qi = sequelize.getQueryInterface();
  return new Umzug({
    migrations: migrations.map((m) => ({ name: m.name, up: () => m.up({ context: qi }), down: () => m.down({ context: qi }) })),
    context: qi,
    storage: new SequelizeStorage({ sequelize, tableName: 'schema_migrations' }),
    logger: undefined,
  });
}

/**
 * Applies pending migrations; returns their names. Instances started together on a new database
 * race to apply them: the loser's statements fail on what the winner created. So a failed run
 * is retried once the winner has had a moment; what the winner applied is then not pending, and
 * a real failure fails again.
 */
export async function migrateUp(sequelize: Sequelize): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      const done = await migrator(sequelize).up();
      return done.map((m) => m.name);
    } catch (err) {
      if (attempt >= 3) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}
