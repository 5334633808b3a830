export { Keyfob } from "./client.js";
export type { ClientCredentialsResponse, KeyfobOptions, LoginOptions, LoginResult, MintResponse, WhoAmI } from "./client.js";
export { Collection, findQuery } from "./collection.js";
export type { FilterValue, FindOptions, ListResponse, RecordMeta, StoredRecord } from "./collection.js";
export { KeyfobError } from "./errors.js";
export { Apps, Grants, Keys, Tokens, Users } from "./manage.js";
export type {
  AppPatch,
  AppView,
  CreatedApp,
  GrantView,
  KeyUsage,
  KeyView,
  NewApp,
  NewSecret,
  TokenListOptions,
  TokenPage,
  TokenView,
  UsageDay,
  UserView,
} from "./manage.js";
export { hasPermission } from "./jwks.js";
export type { KeyfobClaims } from "./jwks.js";
export type { IdTokenClaims, UserInfo } from "./oidc.js";
export type { KeyfobEvents, Session, SessionEndReason, TokenResponse } from "./session.js";
export { MemoryStorage } from "./storage.js";
export type { KeyValueStorage, StorageOption } from "./storage.js";
export type { Clock } from "./clock.js";
export { systemClock } from "./clock.js";
export type { ChannelFactory, ChannelLike, LockManagerLike } from "./coordination.js";
export type { components, operations, paths } from "./openapi.js";
