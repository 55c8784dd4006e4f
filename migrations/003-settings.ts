import { DataTypes, type QueryInterface } from 'sequelize';

/**
 * Settings the instances sharing this database share, one row each: so far the deployment id
 * (src/db/deployment.ts) that keeps their Redis channels apart from other deployments'.
 */
export async function up({ context: qi }: { context: QueryInterface }) {
  await qi.createTable('settings', {
    name: { type: DataTypes.STRING(64), primaryKey: true },
    value: { type: DataTypes.STRING(255), allowNull: false },
  });
}

export async function down({ context: qi }: { context: QueryInterface }) {
  await qi.dropTable('settings');
}
