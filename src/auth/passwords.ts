/**
 * Password hashing (argon2id, the library's defaults: 64 MiB, t=3) and the password policy
 * (NIST SP 800-63B §5.1.1.2: a minimum length, long passphrases welcome, no composition rules,
 * the most common passwords refused — Mozilla's list, shipped in fxa-common-password-list).
 */
import argon2 from 'argon2';
import commonPasswords from 'fxa-common-password-list';

export const MAX_PASSWORD_LENGTH = 256;

export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, { type: argon2.argon2id });
}

// Verified against when the email is unknown, so both answers take the same time.
let dummyHash: Promise<string> | undefined;

/** True when `password` matches `hash`; with no hash (unknown user) it spends the same time and says false. */
export async function verifyPassword(hash: string | undefined, password: string): Promise<boolean> {
  dummyHash ??= hashPassword('switchboard timing equaliser');
  try {
    const ok = await argon2.verify(hash ?? (await dummyHash), password);
    return hash !== undefined && ok;
  } catch {
    return false;
  }
}

/** Why a new password is refused, or undefined when it is acceptable. */
export function passwordProblem(password: string, minLength: number, context: string[] = []): string | undefined {
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
