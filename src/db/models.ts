/**
 * Sequelize models over the tables the migrations create. The migrations own the schema;
 * these only describe it for queries.
 */
import { DataTypes, Model, type InferAttributes, type InferCreationAttributes, type CreationOptional, type ModelStatic, type Sequelize } from 'sequelize';

export class User extends Model<InferAttributes<User>, InferCreationAttributes<User>> {
  declare id: CreationOptional<number>;
  declare email: string;
  declare name: string;
  declare passwordHash: string;
  declare role: CreationOptional<string>;
  declare active: CreationOptional<boolean>;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;

  /**
   * Whether account `id` exists and is active, read afresh: a password change reads it again
   * after the seconds its password checks take, in case an admin disabled it meanwhile.
   */
  static async isActive(this: ModelStatic<User>, id: number): Promise<boolean> {
    return (await this.count({ where: { id, active: true } })) === 1;
  }

  /**
   * Account `id` as it is now, and `readAt`, an instant (by `clock`) just before it was read: a
   * change committed before `readAt` is in what was read; one committed after may be, and its
   * revocation (dated after its commit) then covers anything dated `readAt`.
   */
  static async reread(this: ModelStatic<User>, id: number, clock: () => Promise<number>): Promise<{ user: User | null; readAt: number }> {
    const readAt = await clock();
    return { user: await this.findByPk(id), readAt };
  }
}

export class PlatformConnection extends Model<InferAttributes<PlatformConnection>, InferCreationAttributes<PlatformConnection>> {
  declare id: CreationOptional<number>;
  declare userId: number;
  declare name: string;
  declare type: string;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;
}

/** One row per session: the database backend's sessions, and the directory copy of every other session. */
export class SessionRow extends Model<InferAttributes<SessionRow>, InferCreationAttributes<SessionRow>> {
  declare idHash: string;
  declare handle: string;
  declare userId: number;
  declare backend: string;
  declare data: string;
  declare createdAt: number;
  declare issuedAt: number;
  declare lastActivity: number;
  declare expiresAt: number;
  declare absoluteExpiresAt: number;
  declare ip: string;
  declare userAgent: string;
  declare version: number;
}

export class SessionEvent extends Model<InferAttributes<SessionEvent>, InferCreationAttributes<SessionEvent>> {
  declare id: CreationOptional<number>;
  declare type: string;
  declare userId: number | null;
  declare handle: string | null;
  declare backend: string | null;
  declare actor: string;
  declare reason: string | null;
  declare count: number;
  declare ip: string | null;
  declare userAgent: string | null;
  declare createdAt: CreationOptional<Date>;
}

export class Revocation extends Model<InferAttributes<Revocation>, InferCreationAttributes<Revocation>> {
  declare id: CreationOptional<number>;
  declare kind: 'session' | 'user' | 'all';
  declare subject: string;
  declare notBefore: number;
  declare expiresAt: number;
}

export class FlagOverride extends Model<InferAttributes<FlagOverride>, InferCreationAttributes<FlagOverride>> {
  declare name: string;
  declare value: string;
  declare updatedBy: string;
  declare updatedAt: number;
}

export class Setting extends Model<InferAttributes<Setting>, InferCreationAttributes<Setting>> {
  declare name: string;
  declare value: string;
}

export interface Models {
  sequelize: Sequelize;
  User: typeof User;
  PlatformConnection: typeof PlatformConnection;
  SessionRow: typeof SessionRow;
  SessionEvent: typeof SessionEvent;
  Revocation: typeof Revocation;
  FlagOverride: typeof FlagOverride;
  Setting: typeof Setting;
}

/** BIGINT comes back from PostgreSQL as a string; every epoch-ms column goes through this. */
const epochMs = (name: string) => ({
  type: DataTypes.BIGINT,
  allowNull: false,
  get(this: Model) {
    return Number(this.getDataValue(name));
  },
});

/** Each call makes its own model classes, so two databases (SQLite and PostgreSQL in tests) can be open at once. */
export function defineModels(sequelize: Sequelize): Models {
  const common = { sequelize, underscored: true };
  const UserModel = class extends User {};
  const PlatformConnectionModel = class extends PlatformConnection {};
  const SessionRowModel = class extends SessionRow {};
  const SessionEventModel = class extends SessionEvent {};
  const RevocationModel = class extends Revocation {};
  const FlagOverrideModel = class extends FlagOverride {};
  const SettingModel = class extends Setting {};
  UserModel.init(
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      email: { type: DataTypes.STRING(254), allowNull: false },
      name: { type: DataTypes.STRING(100), allowNull: false },
      passwordHash: { type: DataTypes.STRING(255), allowNull: false },
      role: { type: DataTypes.STRING(16), allowNull: false, defaultValue: 'user' },
      active: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
      createdAt: DataTypes.DATE,
      updatedAt: DataTypes.DATE,
    },
    { ...common, tableName: 'users' },
  );
  PlatformConnectionModel.init(
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      userId: { type: DataTypes.INTEGER, allowNull: false },
      name: { type: DataTypes.STRING(100), allowNull: false },
      type: { type: DataTypes.STRING(40), allowNull: false },
      createdAt: DataTypes.DATE,
      updatedAt: DataTypes.DATE,
    },
    { ...common, tableName: 'platform_connections' },
  );
  SessionRowModel.init(
    {
      idHash: { type: DataTypes.STRING(64), primaryKey: true },
      handle: { type: DataTypes.STRING(32), allowNull: false },
      userId: { type: DataTypes.INTEGER, allowNull: false },
      backend: { type: DataTypes.STRING(16), allowNull: false },
      data: { type: DataTypes.TEXT, allowNull: false },
      createdAt: epochMs('createdAt'),
      issuedAt: epochMs('issuedAt'),
      lastActivity: epochMs('lastActivity'),
      expiresAt: epochMs('expiresAt'),
      absoluteExpiresAt: epochMs('absoluteExpiresAt'),
      ip: { type: DataTypes.STRING(64), allowNull: false },
      userAgent: { type: DataTypes.STRING(512), allowNull: false },
      version: { type: DataTypes.INTEGER, allowNull: false },
    },
    { ...common, tableName: 'sessions', timestamps: false },
  );
  SessionEventModel.init(
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      type: { type: DataTypes.STRING(32), allowNull: false },
      userId: { type: DataTypes.INTEGER, allowNull: true },
      handle: { type: DataTypes.STRING(32), allowNull: true },
      backend: { type: DataTypes.STRING(16), allowNull: true },
      actor: { type: DataTypes.STRING(64), allowNull: false },
      reason: { type: DataTypes.STRING(32), allowNull: true },
      count: { type: DataTypes.INTEGER, allowNull: false },
      ip: { type: DataTypes.STRING(64), allowNull: true },
      userAgent: { type: DataTypes.STRING(512), allowNull: true },
      createdAt: DataTypes.DATE,
    },
    { ...common, tableName: 'session_events', updatedAt: false },
  );
  RevocationModel.init(
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      kind: { type: DataTypes.STRING(8), allowNull: false },
      subject: { type: DataTypes.STRING(64), allowNull: false },
      notBefore: epochMs('notBefore'),
      expiresAt: epochMs('expiresAt'),
    },
    { ...common, tableName: 'revocations', timestamps: false },
  );
  FlagOverrideModel.init(
    {
      name: { type: DataTypes.STRING(64), primaryKey: true },
      value: { type: DataTypes.STRING(64), allowNull: false },
      updatedBy: { type: DataTypes.STRING(64), allowNull: false },
      updatedAt: epochMs('updatedAt'),
    },
    { ...common, tableName: 'flag_overrides', timestamps: false },
  );
  SettingModel.init(
    {
      name: { type: DataTypes.STRING(64), primaryKey: true },
      value: { type: DataTypes.STRING(255), allowNull: false },
    },
    { ...common, tableName: 'settings', timestamps: false },
  );
  return {
    sequelize,
    User: UserModel,
    PlatformConnection: PlatformConnectionModel,
    SessionRow: SessionRowModel,
    SessionEvent: SessionEventModel,
    Revocation: RevocationModel,
    FlagOverride: FlagOverrideModel,
    Setting: SettingModel,
  };
}
