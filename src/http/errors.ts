/**
 * The errors our code answers with: a class per stable `code`, thrown where the problem is
 * found and turned into `{error: {code, message}}` by error-handler.ts. Two kinds of answer do
 * not start as a thrown class: an error status a library set without a body (error-handler.ts,
 * FOR_STATUS: `forbidden`, `not_acceptable`, `request_timeout`, …), and what Node's HTTP parser
 * refuses before Koa sees a request (client-errors.ts). Both use the same shape and codes.
 * test/http/errors.test.ts checks every code against ../shared/API.md.
 */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    /** Top-level fields beside `error` (e.g. `authenticated: false`). */
    readonly extra: Record<string, unknown> = {},
    /** Fields inside `error` (e.g. per-field messages for a form). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export class InvalidInputError extends HttpError {
  constructor(message: string, readonly fields: Record<string, string> = {}) {
    super(400, 'invalid_input', message, {}, {}, Object.keys(fields).length ? { fields } : {});
  }
}
/** Well-formed JSON that is not an object (`[]`, `42`, `"text"`): the wrong input, not broken JSON. */
export class NotAnObjectError extends InvalidInputError {
  constructor() {
    super('The body must be a JSON object');
  }
}
/** Another malformed request: a body that does not decompress, a status a library set without saying why. */
export class BadRequestError extends HttpError {
  constructor(message = 'The request could not be understood') {
    super(400, 'bad_request', message);
  }
}
/**
 * Broken JSON is invalid input too: API.md names `invalid_input` as every route's 400, so a
 * client handling that code handles this one; the message says what is wrong.
 */
export class MalformedJsonError extends InvalidInputError {
  constructor() {
    super('The request body is not valid JSON');
  }
}
/** Bytes that are not UTF-8: decoded, they would be stored as U+FFFD in an email or a name. */
export class NotUtf8Error extends InvalidInputError {
  constructor() {
    super('The request body is not valid UTF-8 text');
  }
}
export class UnsupportedMediaTypeError extends HttpError {
  constructor(message = 'Send the body as application/json') {
    super(415, 'unsupported_media_type', message);
  }
}
export class PayloadTooLargeError extends HttpError {
  constructor() {
    super(413, 'payload_too_large', 'The request body is too large');
  }
}
export class UnauthenticatedError extends HttpError {
  constructor() {
    super(401, 'unauthenticated', 'You are not logged in', {}, { authenticated: false });
  }
}
export class InvalidCredentialsError extends HttpError {
  constructor(
    /** The account tried, when there is one: for the log line, never the answer (which must not tell). */
    readonly userId?: number,
  ) {
    super(401, 'invalid_credentials', 'Email or password is incorrect');
  }
}
export class AdminAuthError extends HttpError {
  constructor() {
    super(401, 'unauthorized', 'A valid admin bearer token is required', { 'WWW-Authenticate': 'Bearer' });
  }
}
export class CsrfError extends HttpError {
  constructor(message = 'Missing or invalid CSRF token') {
    super(403, 'csrf_failed', message);
  }
}
export class NotFoundError extends HttpError {
  constructor(message = 'Not found') {
    super(404, 'not_found', message);
  }
}
/** A 404 for a whole feature that is switched off (admin API without ADMIN_TOKEN): never turned into a 405. */
export class FeatureDisabledError extends NotFoundError {
  constructor() {
    super('Not found');
  }
}
export class MethodNotAllowedError extends HttpError {
  constructor(allowed: string) {
    super(405, 'method_not_allowed', 'Method not allowed', { Allow: allowed });
  }
}
export class EmailTakenError extends HttpError {
  constructor() {
    super(409, 'email_taken', 'An account with this email already exists');
  }
}
export class TooManyAttemptsError extends HttpError {
  constructor(retryAfterSeconds: number) {
    super(429, 'too_many_attempts', 'Too many failed attempts; try again later', { 'Retry-After': String(retryAfterSeconds) });
  }
}
export class SessionTooLargeHttpError extends HttpError {
  constructor() {
    super(413, 'session_too_large', 'The session holds more data than its backend can keep');
  }
}
/**
 * Other requests kept saving the same session while this one tried to: nothing was saved by
 * this one, and trying again is the remedy.
 */
export class SessionConflictHttpError extends HttpError {
  constructor() {
    super(409, 'session_conflict', 'The session was changed by another request at the same time; try again', { 'Retry-After': '1' });
  }
}
export class ServiceUnavailableError extends HttpError {
  constructor(message = 'The service cannot serve this request right now') {
    super(503, 'service_unavailable', message, { 'Retry-After': '1' });
  }
}
/** Anything we did not expect: logged with its stack, answered without it. */
export class InternalError extends HttpError {
  constructor() {
    super(500, 'internal_error', 'Something went wrong on our side');
  }
}
