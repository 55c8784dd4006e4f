/**
 * `npm run migrate` / `npm run migrate:down`: apply pending schema migrations, or undo the last.
 * Undoing one that users would notice (its `downLoses`) needs `-- --yes`: a rollback reaches for
 * migrate:down by habit, and the schema of the release it goes back to is usually the same.
 */
import { openDatabase } from '../src/db/database.js';
import { migrator } from '../src/db/migrator.js';
import { migrations } from '../migrations/index.js';
import { scriptConfig } from './cli.js';

const [direction, ...rest] = process.argv.slice(2);
const confirmed = rest.length === 1 && rest[0] === '--yes';
if ((direction !== 'up' && direction !== 'down') || (rest.length > 0 && !(direction === 'down' && confirmed))) {
  console.error('usage: migrate.js up | migrate.js down [--yes]  (npm run migrate, npm run migrate:down -- --yes)');
  process.exit(2);
}
const config = scriptConfig();
const sequelize = await openDatabase(config.databaseUrl);
try {
  const umzug = migrator(sequelize);
  if (direction === 'down' && !confirmed) {
    const last = (await umzug.executed()).at(-1)?.name;
    const loses = migrations.find((m) => m.name === last)?.downLoses;
    if (loses) {
      console.error(`migrate:down: reverting ${last} ${loses}. To go ahead: npm run migrate:down -- --yes`);
      process.exitCode = 2;
    }
  }
  if (process.exitCode !== 2) {
    const done = direction === 'up' ? await umzug.up() : await umzug.down();
    console.log(done.length ? `${direction === 'up' ? 'applied' : 'reverted'}: ${done.map((m) => m.name).join(', ')}` : 'nothing to do');
  }
} finally {
  await sequelize.close();
}
