import { DataTypes, type QueryInterface, type Transaction } from 'sequelize';

/**
 * Settings the instances sharing this database share, one row each: so far the deployment id
 * (src/db/deployment.ts) that keeps their Redis channels apart from other deployments'.
 */
export async function up({ context: qi, transaction }: { context: QueryInterface; transaction: Transaction }) {
  await qi.createTable('settings', {
    name: { type: DataTypes.STRING(64), primaryKey: true },
    value: { type: DataTypes.STRING(255), allowNull: false },
  }, { transaction });
}

/** What `npm run migrate:down` of this migration costs users (scripts/migrate.ts asks for `--yes`). */
export const downLoses =
  'drops the deployment id: every cookie-backend session is logged out, the instances still running and those restarted stop hearing each other over Redis, and unsigned ids and unbound cookies open again for an hour. A rollback to a release that has 003-settings (every release since 4 Dec 2026, 985b05a) needs no migrate:down';

export async function down({ context: qi, transaction }: { context: QueryInterface; transaction: Transaction }) {
  await qi.dropTable('settings', { transaction });
}
