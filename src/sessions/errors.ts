/** Errors a session store raises for reasons other than its backend failing. */
export class SessionTooLargeError extends Error {
  override name = 'SessionTooLargeError';
  readonly code = 'session_too_large';
  constructor(readonly size: number, readonly limit: number) {
    super(`Session is ${size} bytes sealed; a cookie holds at most ${limit}`);
  }
}
