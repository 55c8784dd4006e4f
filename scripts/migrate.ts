/** `npm run migrate` / `npm run migrate:down`: apply pending schema migrations, or undo the last. */
import { openDatabase } from '../src/db/database.js';
import { migrator } from '../src/db/migrator.js';
import { scriptConfig } from './cli.js';

const direction = process.argv[2];
if (direction !== 'up' && direction !== 'down') {
  console.error('usage: migrate.js up|down');
  process.exit(2);
}
const config = scriptConfig();
const sequelize = await openDatabase(config.databaseUrl);
try {
  const umzug = migrator(sequelize);
  const done = direction === 'up' ? await umzug.up() : await umzug.down();
  console.log(done.length ? `${direction === 'up' ? 'applied' : 'reverted'}: ${done.map((m) => m.name).join(', ')}` : 'nothing to do');
} finally {
  await sequelize.close();
}
