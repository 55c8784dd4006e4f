/** Errors a session store raises for reasons other than its backend failing. */
export class SessionTooLargeError extends Error {
  override name = 'SessionTooLargeError';
  readonly code = 'session_too_large';
  constructor(readonly size: number, readonly limit: number) {
    super(`Session is ${size} bytes sealed; a cookie holds at most ${limit}`);
  }
}

/** The session changed in the store since it was read (another request saved it first). */
export class SessionConflictError extends Error {
  override name = 'SessionConflictError';
  constructor(readonly expectedVersion: number) {
    super(`session was saved by another request since version ${expectedVersion}`);
  }
}
