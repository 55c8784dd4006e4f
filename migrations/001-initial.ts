import { DataTypes, type QueryInterface, type Transaction } from 'sequelize';

/** Users, their platform connections, sessions (the database backend and the directory of all sessions), and the audit trail. */
export async function up({ context: qi, transaction }: { context: QueryInterface; transaction: Transaction }) {
  await qi.createTable('users', {
    id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
    email: { type: DataTypes.STRING(254), allowNull: false, unique: true },
    name: { type: DataTypes.STRING(100), allowNull: false },
    password_hash: { type: DataTypes.STRING(255), allowNull: false },
    role: { type: DataTypes.STRING(16), allowNull: false, defaultValue: 'user' },
    active: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
    created_at: { type: DataTypes.DATE, allowNull: false },
    updated_at: { type: DataTypes.DATE, allowNull: false },
  }, { transaction });

  await qi.createTable('platform_connections', {
    id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
    user_id: { type: DataTypes.INTEGER, allowNull: false, references: { model: 'users', key: 'id' }, onDelete: 'CASCADE' },
    name: { type: DataTypes.STRING(100), allowNull: false },
    type: { type: DataTypes.STRING(40), allowNull: false },
    created_at: { type: DataTypes.DATE, allowNull: false },
    updated_at: { type: DataTypes.DATE, allowNull: false },
  }, { transaction });
  await qi.addIndex('platform_connections', ['user_id'], { transaction });

  // Times are epoch milliseconds (BIGINT): compared on every request, so kept as plain numbers.
  await qi.createTable('sessions', {
    id_hash: { type: DataTypes.STRING(64), primaryKey: true },
    handle: { type: DataTypes.STRING(32), allowNull: false, unique: true },
    user_id: { type: DataTypes.INTEGER, allowNull: false },
    backend: { type: DataTypes.STRING(16), allowNull: false },
    data: { type: DataTypes.TEXT, allowNull: false },
    created_at: { type: DataTypes.BIGINT, allowNull: false },
    issued_at: { type: DataTypes.BIGINT, allowNull: false },
    last_activity: { type: DataTypes.BIGINT, allowNull: false },
    expires_at: { type: DataTypes.BIGINT, allowNull: false },
    absolute_expires_at: { type: DataTypes.BIGINT, allowNull: false },
    ip: { type: DataTypes.STRING(64), allowNull: false, defaultValue: '' },
    user_agent: { type: DataTypes.STRING(512), allowNull: false, defaultValue: '' },
    version: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 1 },
  }, { transaction });
  await qi.addIndex('sessions', ['user_id'], { transaction });
  await qi.addIndex('sessions', ['expires_at'], { transaction });

  await qi.createTable('session_events', {
    id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
    type: { type: DataTypes.STRING(32), allowNull: false },
    user_id: { type: DataTypes.INTEGER, allowNull: true },
    handle: { type: DataTypes.STRING(32), allowNull: true },
    backend: { type: DataTypes.STRING(16), allowNull: true },
    actor: { type: DataTypes.STRING(64), allowNull: false },
    reason: { type: DataTypes.STRING(32), allowNull: true },
    count: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 1 },
    ip: { type: DataTypes.STRING(64), allowNull: true },
    user_agent: { type: DataTypes.STRING(512), allowNull: true },
    created_at: { type: DataTypes.DATE, allowNull: false },
  }, { transaction });
  await qi.addIndex('session_events', ['user_id', 'created_at'], { transaction });
  await qi.addIndex('session_events', ['created_at'], { transaction });
}

/** What `npm run migrate:down` of this migration costs users (scripts/migrate.ts asks for `--yes`). */
export const downLoses = 'drops every user, platform and session';

export async function down({ context: qi, transaction }: { context: QueryInterface; transaction: Transaction }) {
  await qi.dropTable('session_events', { transaction });
  await qi.dropTable('sessions', { transaction });
  await qi.dropTable('platform_connections', { transaction });
  await qi.dropTable('users', { transaction });
}
