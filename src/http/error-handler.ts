/**
 * The single place errors become responses. Known errors keep their status and code;
 * anything else is logged with its stack and answered as a bare 500, never with details.
 */
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { SessionTooLargeError } from '../sessions/errors.js';
import { BackendUnavailableError } from '../sessions/guarded-store.js';
import { HttpError, MalformedJsonError, PayloadTooLargeError, ServiceUnavailableError, SessionTooLargeHttpError, UnsupportedMediaTypeError } from './errors.js';

/** Errors raised by libraries (body parser, cookies) that mean the client sent something bad. */
function fromLibrary(err: unknown): HttpError | undefined {
  const e = err as { status?: unknown; statusCode?: unknown; type?: string };
  const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : undefined;
  if (status === 413 || e.type === 'entity.too.large') return new PayloadTooLargeError();
  if (status === 415) return new UnsupportedMediaTypeError();
  if (status === 400) return new MalformedJsonError();
  if (status !== undefined && status >= 400 && status < 500) return new HttpError(status, 'bad_request', 'The request could not be understood');
  return undefined;
}

export function errorHandler(logger: Logger) {
  return async function handleErrors(ctx: Context, next: Next) {
    try {
      await next();
    } catch (err) {
      let error: HttpError;
      if (err instanceof HttpError) error = err;
      else if (err instanceof SessionTooLargeError) error = new SessionTooLargeHttpError();
      else if (err instanceof BackendUnavailableError) {
        logger.warn({ backend: err.backend, reason: err.reason }, 'no session backend could serve the request');
        error = new ServiceUnavailableError();
      } else {
        const known = fromLibrary(err);
        if (known) error = known;
        else {
          logger.error({ err }, 'unhandled error');
          error = new HttpError(500, 'internal_error', 'Something went wrong on our side');
        }
      }
      ctx.status = error.status;
      ctx.set(error.headers);
      ctx.body = { ...error.extra, error: { code: error.code, message: error.message, ...error.details } };
    }
  };
}
