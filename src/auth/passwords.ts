/**
 * Password hashing (argon2id, the library's defaults: 64 MiB, t=3) and the password policy
 * (NIST SP 800-63B §5.1.1.2: a minimum length, long passphrases welcome, no composition rules,
 * the most common passwords refused — Mozilla's list, shipped in fxa-common-password-list).
 */
import { availableParallelism } from 'node:os';
import argon2 from 'argon2';
import { bulkhead, BulkheadRejectedError } from 'cockatiel';
import commonPasswords from 'fxa-common-password-list';

export const MAX_PASSWORD_LENGTH = 256;

/**
 * argon2 works on libuv's thread pool (4 threads unless UV_THREADPOOL_SIZE says otherwise),
 * which sqlite3, file system calls and DNS lookups share. A burst of a dozen logins once held
 * every thread for a hash's ~100 ms at a time, and session reads queued behind them past their
 * deadline: 503s for everybody. So hashes run at most this many at a time, leaving the pool two
 * threads (nor more than there are cores: more would only share them); the others wait here.
 */
export const HASH_CONCURRENCY = Math.max(1, Math.min(availableParallelism(), (Number(process.env.UV_THREADPOOL_SIZE) || 4) - 2));
/** Hashes waiting beyond this many (a flood of logins): refused at once rather than kept waiting. */
export const HASH_QUEUE = 64;
const hashing = bulkhead(HASH_CONCURRENCY, HASH_QUEUE);

/** Too many passwords are being hashed or checked at once: try again shortly (a 503). */
export class PasswordHashingBusyError extends Error {
  constructor() {
    super('Too many password checks at once');
    this.name = 'PasswordHashingBusyError';
  }
}

/**
 * argon2 could not run a check (out of memory, no thread to run on): the server's trouble, not a
 * wrong password — answered 503, and not counted against the account's login limits.
 */
export class PasswordCheckFailedError extends Error {
  constructor(reason: string) {
    super(`argon2 could not check a password: ${reason}`);
    this.name = 'PasswordCheckFailedError';
  }
}

// What argon2's C library says when the machine, not the stored hash, is at fault.
const MACHINE_FAILURES = new Set(['Memory allocation error', 'Threading failure']);

function inTurn<T>(work: () => Promise<T>): Promise<T> {
  return hashing.execute(work).catch((err: unknown) => {
    throw err instanceof BulkheadRejectedError ? new PasswordHashingBusyError() : err;
  });
}

/**
 * A password is hashed in one Unicode spelling (NFKC, as NIST SP 800-63B §5.1.1.2 advises): "ä"
 * typed as one character on one keyboard and as a + accent on another is the same password.
 */
function normalized(password: string): string {
  return password.normalize('NFKC');
}

export function hashPassword(password: string): Promise<string> {
  return inTurn(() => argon2.hash(normalized(password), { type: argon2.argon2id }));
}

// Verified against when the email is unknown, so both answers take the same time.
let dummyHash: Promise<string> | undefined;

/** True when `password` matches `hash`; with no hash (unknown user) it spends the same time and says false. */
export async function verifyPassword(hash: string | undefined, password: string): Promise<boolean> {
  dummyHash ??= hashPassword('switchboard timing equaliser');
  const against = hash ?? (await dummyHash);
  // A stored hash argon2 cannot read is a wrong password; a busy pool or a failing machine is not.
  const check = (candidate: string) =>
    inTurn(() =>
      argon2.verify(against, candidate).catch((err: unknown) => {
        if (err instanceof Error && MACHINE_FAILURES.has(err.message)) throw new PasswordCheckFailedError(err.message);
        return false;
      }),
    );
  // Hashes made before passwords were normalised hold the spelling typed then. Checked against
  // the dummy hash too: an unknown email that skipped it answered a full-width password in half
  // the time of a known one, telling which emails have accounts.
  const ok = (await check(normalized(password))) || (normalized(password) !== password && (await check(password)));
  return hash !== undefined && ok;
}

/** Why a new password is refused, or undefined when it is acceptable. */
export function passwordProblem(typed: string, minLength: number, context: string[] = []): string | undefined {
  // Judged as it is hashed: "１２３４５６７８" (full-width) is "12345678", and logs in as it.
  const password = normalized(typed);
  const length = [...password].length;
  if (length < minLength) return `Use at least ${minLength} characters`;
  if (length > MAX_PASSWORD_LENGTH) return `Use at most ${MAX_PASSWORD_LENGTH} characters`;
  // One character over and over (eight spaces, "aaaaaaaa") is as guessable as any common password.
  if (new Set(password).size === 1) return 'Use more than one repeated character';
  if (commonPasswords.test(password) || commonPasswords.test(password.toLowerCase())) return 'This password is too common; choose another';
  const lower = password.toLowerCase();
  if (context.some((c) => c.length >= 4 && lower === c.toLowerCase())) return 'Do not use your email or name as your password';
  return undefined;
}
