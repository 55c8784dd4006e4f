// Errors a session store raises for reasons other than its backend failing. The HTTP layer
// gives each its answer (http/error-handler.ts).
import type { SessionRecord } from './session.js';

/** The sealed session would not fit in a cookie. */
export class SessionTooLargeError extends Error {
  override name = 'SessionTooLargeError';
  constructor(readonly size: number, readonly limit: number) {
    super(`Session is ${size} bytes sealed; a cookie holds at most ${limit}`);
  }
}

/**
 * The session changed in the store since it was read (another request saved it first).
 * `current`: the session as it now is, where the store cannot be asked for it by id (a sealed
 * cookie: CookieStore); otherwise the caller reads it again.
 */
export class SessionConflictError extends Error {
  override name = 'SessionConflictError';
  constructor(
    readonly expectedVersion: number,
    readonly current?: SessionRecord,
  ) {
    super(`session was saved by another request since version ${expectedVersion}`);
  }
}

/** Why a backend could not serve: it failed, it did not answer in time, or its breaker is open. */
export type FailureReason = 'error' | 'timeout' | 'circuit_open';

/** The backend could not serve: failed, too slow, or its breaker is open. */
export class BackendUnavailableError extends Error {
  override name = 'BackendUnavailableError';
  constructor(
    readonly backend: string,
    readonly reason: FailureReason,
    options?: { cause?: unknown },
  ) {
    super(`session backend ${backend} unavailable (${reason})`, options);
  }
}
