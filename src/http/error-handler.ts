/**
 * The single place errors become responses. Known errors keep their status and code;
 * anything else is logged with its stack and answered as a bare 500, never with details.
 *
 * It also gives the error shape to the answers that are errors without an exception: a
 * route that exists for other methods (405 with Allow; OPTIONS answers 204 with Allow), and
 * any 4xx/5xx a library set without a body.
 */
import { performance } from 'node:perf_hooks';
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { PasswordCheckFailedError, PasswordHashingBusyError } from '../auth/passwords.js';
import { describeDatabaseError, isDatabaseOutageError } from '../db/database.js';
import { BackendUnavailableError, SessionConflictError, SessionTooLargeError } from '../sessions/errors.js';
import { BadRequestError, FeatureDisabledError, HttpError, InternalError, InvalidCredentialsError, InvalidInputError, MalformedJsonError, MethodNotAllowedError, NotAnObjectError, NotFoundError, PayloadTooLargeError, ServiceUnavailableError, SessionConflictHttpError, SessionTooLargeHttpError, UnsupportedMediaTypeError } from './errors.js';

// The methods whose bodies the body parser reads (its default parsedMethods).
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

/** True while the request body has not been parsed yet (the body parser sets it, or throws). */
function bodyUnread(ctx: Context): boolean {
  return BODY_METHODS.has(ctx.method) && ctx.request.body === undefined && (ctx.request.length > 0 || ctx.get('Transfer-Encoding') !== '');
}

function isJson(text: unknown): boolean {
  if (typeof text !== 'string') return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Errors raised by libraries (body parser, cookies) that mean the client sent something bad. */
function fromLibrary(err: unknown, ctx: Context): HttpError | undefined {
  const e = err as { status?: unknown; statusCode?: unknown; type?: string; message?: unknown };
  const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : undefined;
  if (status === 413 || e.type === 'entity.too.large') return new PayloadTooLargeError();
  // inflation (under the body parser) gives no type, only this message.
  if (e.type === 'encoding.unsupported' || (status === 415 && typeof e.message === 'string' && e.message.startsWith('Unsupported Content-Encoding'))) return new UnsupportedMediaTypeError('Send the body without Content-Encoding, or as gzip, deflate or br');
  if (e.type === 'charset.unsupported') return new UnsupportedMediaTypeError('Send the body as UTF-8');
  if (status === 415) return new UnsupportedMediaTypeError();
  // The JSON parser (bourne) refuses prototype-poisoning keys: well-formed JSON, unacceptable input.
  if (typeof e.message === 'string' && e.message.includes('forbidden prototype property')) {
    return new InvalidInputError('The body must not contain a __proto__ key');
  }
  // jsonStrict refuses well-formed JSON that is not an object or array ("a string", 42): that
  // is the wrong input, not broken JSON.
  if (status === 400 && typeof e.message === 'string' && e.message.includes('only supports object and array') && isJson((err as { body?: unknown }).body)) {
    return new NotAnObjectError();
  }
  if (status === 400) return new MalformedJsonError();
  if (status !== undefined && status >= 400 && status < 500) return new BadRequestError();
  // Anything else thrown while the body was being read (a gzip/brotli body that does not
  // decompress, a stream error) is the body's fault, not ours.
  if (bodyUnread(ctx)) return new BadRequestError('The request body could not be decoded');
  return undefined;
}

/** Methods of the routes whose path matched although none matched the method (@koa/router's ctx.matched). */
function allowedMethods(ctx: Context): string[] {
  if ((ctx as Context & { _matchedRoute?: unknown })._matchedRoute !== undefined) return [];
  const matched = (ctx as Context & { matched?: Array<{ methods?: string[] }> }).matched ?? [];
  const methods = new Set<string>();
  for (const layer of matched) for (const m of layer.methods ?? []) methods.add(m);
  if (methods.size && !methods.has('OPTIONS')) methods.add('OPTIONS');
  return [...methods];
}

/** The code and message of an error status a library set without a body (test/http/errors.test.ts checks README lists them). */
export const FOR_STATUS: Readonly<Record<number, readonly [string, string]>> = {
  400: ['bad_request', 'The request could not be understood'],
  401: ['unauthenticated', 'You are not logged in'],
  403: ['forbidden', 'Forbidden'],
  404: ['not_found', 'Not found'],
  405: ['method_not_allowed', 'Method not allowed'],
  406: ['not_acceptable', 'Not acceptable'],
  408: ['request_timeout', 'The request took too long'],
  413: ['payload_too_large', 'The request body is too large'],
  415: ['unsupported_media_type', 'Send the body as application/json'],
};

/**
 * A log of one kind of outage: during one, every request fails the same way, so the first is
 * logged and then one line a second, with how many requests it stands for. Those left out at
 * the end are told a second after the last line (an outage shorter than a second was one line
 * for its first request, and the rest were never counted).
 */
export function outageLog(): (log: (requests: number) => void) => void {
  // The monotonic clock: a system clock stepped back would silence the outage for the step.
  let loggedAt = -Infinity;
  let unlogged = 0;
  let lastLog: (requests: number) => void = () => undefined;
  let pending: NodeJS.Timeout | undefined;
  const write = (log: (requests: number) => void, requests: number) => {
    clearTimeout(pending);
    pending = undefined;
    log(requests);
    loggedAt = performance.now();
    unlogged = 0;
  };
  return (log) => {
    const now = performance.now();
    if (now - loggedAt >= 1000) return write(log, unlogged + 1);
    unlogged++;
    lastLog = log;
    pending ??= setTimeout(() => write(lastLog, unlogged), loggedAt + 1000 - now);
    pending.unref();
  };
}

/**
 * Refusals an operator looks for after a credential-stuffing run or a probe of the admin API
 * (OWASP ASVS V7: authentication decisions are logged): one info line each, with the address,
 * the route and, for a wrong password, the account tried (its id; never the email typed, which
 * may be a password typed in the wrong field).
 */
const SECURITY_REFUSALS: ReadonlySet<string> = new Set(['invalid_credentials', 'too_many_attempts', 'unauthorized', 'csrf_failed']);

export function errorHandler(logger: Logger) {
  const backendOutage = outageLog();
  const databaseOutage = outageLog();
  const hashingFull = outageLog();
  return async function handleErrors(ctx: Context, next: Next) {
    try {
      await next();
      // An error status without a body (set by a library, e.g. 405/501 from the router).
      if (ctx.status >= 400 && (ctx.body === undefined || ctx.body === null || ctx.body === '')) {
        if (ctx.status === 501) ctx.status = 405;
        const [code, message] = FOR_STATUS[ctx.status] ?? (ctx.status >= 500 ? ['internal_error', 'Something went wrong on our side'] : ['bad_request', 'The request could not be understood']);
        ctx.body = { error: { code, message } };
      }
    } catch (err) {
      let error: HttpError;
      const allowed = err instanceof NotFoundError && !(err instanceof FeatureDisabledError) ? allowedMethods(ctx) : [];
      if (allowed.length && ctx.method === 'OPTIONS') {
        ctx.status = 204;
        ctx.set('Allow', allowed.join(', '));
        return;
      }
      if (allowed.length) error = new MethodNotAllowedError(allowed.join(', '));
      else if (err instanceof HttpError) {
        error = err;
        if (SECURITY_REFUSALS.has(err.code)) {
          const userId = err instanceof InvalidCredentialsError ? err.userId : undefined;
          logger.info({ event: 'refused', code: err.code, method: ctx.method, path: ctx.path, ip: ctx.ip, ...(userId !== undefined && { userId }) }, 'request refused');
        }
      } else if (err instanceof SessionTooLargeError) error = new SessionTooLargeHttpError();
      else if (err instanceof SessionConflictError) {
        logger.warn({ expectedVersion: err.expectedVersion }, 'session save lost to concurrent saves');
        error = new SessionConflictHttpError();
      } else if (err instanceof BackendUnavailableError) {
        const { backend, reason } = err;
        backendOutage((requests) => logger.warn({ backend, reason, requests }, 'no session backend could serve the request'));
        error = new ServiceUnavailableError();
      } else if (isDatabaseOutageError(err)) {
        // Users, platforms, the session directory and revocations live in the database: while
        // it is down, or takes no writes (read-only, its disk full), what needs them cannot be
        // served, which is not a bug of ours.
        databaseOutage((requests) => logger.warn({ reason: describeDatabaseError(err), requests }, 'the database could not serve the request'));
        error = new ServiceUnavailableError();
      } else if (err instanceof PasswordHashingBusyError) {
        hashingFull((requests) => logger.warn({ requests }, 'password checks queue full: logins or signups refused'));
        error = new ServiceUnavailableError('Too many logins at once; try again in a moment');
      } else if (err instanceof PasswordCheckFailedError) {
        logger.error({ reason: err.message }, 'password check failed');
        error = new ServiceUnavailableError('The password could not be checked; try again in a moment');
      } else {
        const known = fromLibrary(err, ctx);
        if (known) error = known;
        else {
          logger.error({ err }, 'unhandled error');
          error = new InternalError();
        }
      }
      ctx.status = error.status;
      ctx.set(error.headers);
      ctx.body = { ...error.extra, error: { code: error.code, message: error.message, ...error.details } };
    }
  };
}
