/** express-session ships no types and @types/express-session is not installed: the little the peers use. */
declare module 'express-session' {
  import type { RequestHandler } from 'express';
  import { EventEmitter } from 'node:events';

  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  export interface SessionData {}
  export class Store extends EventEmitter {}
  interface SessionOptions {
    store?: Store;
    secret: string | string[];
    resave?: boolean;
    saveUninitialized?: boolean;
    cookie?: { httpOnly?: boolean; sameSite?: 'lax' | 'strict' | 'none' | boolean; maxAge?: number; secure?: boolean };
  }
  function session(options: SessionOptions): RequestHandler;
  export default session;
}
