/**
 * `npm run migrate` / `npm run migrate:down`: apply pending schema migrations, or undo the last.
 * Undoing one that users would notice (its `downLoses`) needs `-- --yes`: a rollback reaches for
 * migrate:down by habit, and the schema of the release it goes back to is usually the same.
 */
import { openDatabase } from '../src/db/database.js';
import { migrateUp, migrator } from '../src/db/migrator.js';
import { migrations } from '../migrations/index.js';
import { scriptConfig, stopOnFailure } from './cli.js';

const [direction, ...rest] = process.argv.slice(2);
const confirmed = rest.length === 1 && rest[0] === '--yes';
if ((direction !== 'up' && direction !== 'down') || (rest.length > 0 && !(direction === 'down' && confirmed))) {
  console.error('usage: migrate.js up | migrate.js down [--yes]  (npm run migrate, npm run migrate:down -- --yes)');
  process.exit(2);
}
// A database it cannot reach, or a migration that fails, stops it with one line (exit 1), not a stack trace.
stopOnFailure(direction === 'up' ? 'migrate' : 'migrate:down');
const config = scriptConfig();
const sequelize = await openDatabase(config.databaseUrl);
try {
  // What this run itself did: umzug also names what another run did meanwhile.
  const ran: string[] = [];
  const umzug = migrator(sequelize, ran);
  if (direction === 'down' && !confirmed) {
    const last = (await umzug.executed()).at(-1)?.name;
    const loses = migrations.find((m) => m.name === last)?.downLoses;
    if (loses) {
      console.error(`migrate:down: reverting ${last} ${loses}. To go ahead: npm run migrate:down -- --yes`);
      process.exitCode = 2;
    }
  }
  if (process.exitCode !== 2) {
    // Up as the server applies them: runs at the same moment (two deploy jobs, an instance
    // starting) take turns, and what another applied meanwhile is skipped.
    const done = direction === 'up' ? await migrateUp(sequelize) : (await umzug.down(), ran);
    console.log(done.length ? `${direction === 'up' ? 'applied' : 'reverted'}: ${done.join(', ')}` : 'nothing to do');
  }
} finally {
  await sequelize.close();
}
