import { DataTypes, type QueryInterface, type Transaction } from 'sequelize';

/**
 * The revocation record (sessions logged out or revoked, per-user and global "not before"
 * epochs) that every instance mirrors in memory, and the persisted admin flag override.
 */
export async function up({ context: qi, transaction }: { context: QueryInterface; transaction: Transaction }) {
  await qi.createTable('revocations', {
    id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
    kind: { type: DataTypes.STRING(8), allowNull: false }, // session | user | all
    subject: { type: DataTypes.STRING(64), allowNull: false },
    not_before: { type: DataTypes.BIGINT, allowNull: false },
    expires_at: { type: DataTypes.BIGINT, allowNull: false },
  }, { transaction });
  await qi.addIndex('revocations', ['expires_at'], { transaction });

  await qi.createTable('flag_overrides', {
    name: { type: DataTypes.STRING(64), primaryKey: true },
    value: { type: DataTypes.STRING(64), allowNull: false },
    updated_by: { type: DataTypes.STRING(64), allowNull: false },
    updated_at: { type: DataTypes.BIGINT, allowNull: false },
  }, { transaction });
}

/** What `npm run migrate:down` of this migration costs users (scripts/migrate.ts asks for `--yes`). */
export const downLoses = 'drops the revocations and flag overrides: sessions ended by a password change, an admin or a revoke-all whose copies remain work again, and overrides are forgotten';

export async function down({ context: qi, transaction }: { context: QueryInterface; transaction: Transaction }) {
  await qi.dropTable('flag_overrides', { transaction });
  await qi.dropTable('revocations', { transaction });
}
