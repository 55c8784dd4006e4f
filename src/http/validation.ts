/** Request validation with zod: unknown fields, wrong types and bad values are one 400 `invalid_input`, with a message per field. */
import type { Context } from 'koa';
import { z } from 'zod';
import { InvalidInputError, NotAnObjectError, NotUtf8Error, UnsupportedMediaTypeError } from './errors.js';

declare module 'koa' {
  interface DefaultState {
    /** Why the body parser could not read the body (app.ts): thrown by the route that reads it. */
    bodyError?: Error;
  }
}

/**
 * An unknown field is named back only when its name looks like one. JSON sent with a form's
 * Content-Type arrives as one field whose name is the whole body, password included.
 */
const FIELD_NAME = /^[A-Za-z_$][\w$.-]{0,63}$/;
const UNNAMED_FIELD = 'A field this request does not take (not named here: in a form it may be part of a value; JSON sent as a form? Send Content-Type: application/json)';

/** `nameUnknown`: name unknown fields back (not for a form, whose field names are any text, split at `&`). */
function parseInput<T extends z.ZodType>(schema: T, input: unknown, nameUnknown = true): z.output<T> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  // No prototype: a field named `toString` or `constructor` is reported like any other.
  const fields: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const issue of result.error.issues) {
    if (issue.code === 'unrecognized_keys') for (const key of issue.keys) fields[nameUnknown && FIELD_NAME.test(key) ? key : '_'] ??= nameUnknown && FIELD_NAME.test(key) ? 'Unknown field' : UNNAMED_FIELD;
    else fields[issue.path.join('.') || '_'] ??= issue.message;
  }
  const summary = Object.entries(fields)
    .map(([k, v]) => (k === '_' ? v : `${k}: ${v}`))
    .join('; ');
  throw new InvalidInputError(summary || 'Invalid input', fields);
}

/**
 * The request body, validated. A body the parser did not read (sent as text/plain, XML, or
 * without a Content-Type) is 415 rather than an empty object that fails for missing fields.
 */
export function parseBody<T extends z.ZodType>(ctx: Context, schema: T): z.output<T> {
  const sent = ctx.request.length > 0 || ctx.get('Transfer-Encoding') !== '';
  // Bodies are read as UTF-8 whatever the charset says: another one is refused by name rather
  // than misread (a Latin-1 "é" would come back as "not valid UTF-8", UTF-16 as "not valid JSON").
  const charset = sent && ctx.get('Content-Type').includes(';') ? ctx.request.charset : '';
  if (charset && !/^utf-?8$/i.test(charset)) throw new UnsupportedMediaTypeError(`Send the body in UTF-8 (not charset=${charset.slice(0, 40)})`);
  if (ctx.state.bodyError) throw ctx.state.bodyError;
  const raw = (ctx.request as { rawBody?: unknown }).rawBody;
  if (sent && raw === undefined) throw new UnsupportedMediaTypeError();
  // The parser decodes as iconv-lite does, each invalid byte becoming U+FFFD, and cannot be made
  // strict. A literal U+FFFD in the text is refused with them: it only ever stands for lost text.
  if (typeof raw === 'string' && raw.includes('\uFFFD')) throw new NotUtf8Error();
  const body: unknown = ctx.request.body;
  // The JSON parser refuses bare values (error-handler.ts); an array gets here, and the same answer.
  if (body !== undefined && (typeof body !== 'object' || body === null || Array.isArray(body))) throw new NotAnObjectError();
  return parseInput(schema, body, !ctx.request.is('urlencoded'));
}

/** A positive integer route parameter, or undefined (callers answer 404: no such thing). */
export function idParam(value: string | undefined): number | undefined {
  if (!value || !/^[1-9][0-9]{0,9}$/.test(value)) return undefined;
  const n = Number(value);
  return n <= 2_147_483_647 ? n : undefined;
}

/** Control characters (NUL, escapes, newlines) have no place in a name or an address. */
const NO_CONTROL = /^[^\p{Cc}]*$/u;
/** Nor invisible formatting (zero-width spaces and joiners, soft hyphens, direction overrides) in an address: two that look the same must be the same. */
const NO_FORMAT = /^[^\p{Cf}]*$/u;
/** Direction overrides and isolates would make a name shown in a list of sessions read as something else. */
const NO_BIDI_CONTROL = /^[^\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]*$/u;
/** Full-width and half-width forms (ｅｘａｍｐｌｅ), and the ideographic full stop: another spelling of an ASCII address. */
const NO_WIDTH_FORMS = /^[^\uFF00-\uFFEF\u3002]*$/u;

/**
 * Something to see: not only zero-width or other formatting characters, spaces, or the blank
 * fillers (Hangul, Braille) that render as nothing — a name of those reads "Hello, " and an
 * empty row in a list of sessions. (Emoji sequences join with U+200D, so formatting characters
 * are fine beside visible ones.)
 */
const VISIBLE = /[^\p{Cf}\p{Z}\s\u115F\u1160\u3164\uFFA0\u2800]/u;
// A lone surrogate is not text: it cannot be encoded, so it would come back as U+FFFD.
const LONE_SURROGATE = /\p{Cs}/u;
export const email = z
  .string({ error: 'Enter an email address' })
  .trim()
  .regex(NO_CONTROL, 'Enter a valid email address')
  .regex(NO_FORMAT, 'Remove invisible characters from the email address')
  .regex(NO_WIDTH_FORMS, 'Type the email address in ordinary (not full-width) characters')
  .refine((v) => !LONE_SURROGATE.test(v), 'Enter a valid email address')
  // "é" typed as one character or as e + accent is the same address to its owner: one spelling.
  .normalize('NFC')
  .toLowerCase()
  .max(254, 'Email is too long')
  // The domain ends in a label, not a dot: "a@example.com." would be a second account for the same address.
  .regex(/^[^\s@]+@[^\s@]+\.[^\s@.]+$/, 'Enter a valid email address');
/**
 * A mailbox as mail servers take it (RFC 5321/5322, quoted local parts aside): a local part of
 * at most 64 characters, none of the specials (`<>()[]\\,;:"`), no empty dot-separated part
 * (`a..b`, `.a`, `a.`), and a domain of non-empty labels that do not start or end with `-`.
 * Asked of new accounts only: an address signed up under looser rules still logs in.
 */
function isMailbox(address: string): boolean {
  const at = address.lastIndexOf('@');
  const local = address.slice(0, at);
  if ([...local].length > 64 || /[<>()[\]\\,;:"]/.test(local) || local.split('.').includes('')) return false;
  return address
    .slice(at + 1)
    .split('.')
    .every((label) => label !== '' && !label.startsWith('-') && !label.endsWith('-'));
}
/**
 * Compatibility characters (the ligature ﬁ, ℯ, the roman numeral Ⅼ, circled and superscript
 * letters) are other spellings of ordinary ones: `exampⅼe.com` is `example.com` to IDNA, so an
 * account under it would be a second one that looks like the first. Full-width forms are refused
 * above with their own message, for every address; these for new accounts only.
 */
const isPlainSpelling = (address: string) => address.normalize('NFKC') === address;
export const newEmail = email.refine(isMailbox, 'Enter a valid email address').refine(isPlainSpelling, 'Type the email address in ordinary letters and digits (not ligatures, circled, superscript or other look-alike characters)');

export const name = z
  .string({ error: 'Enter a name' })
  .trim()
  .regex(NO_CONTROL, 'Remove control characters from the name')
  .regex(NO_BIDI_CONTROL, 'Remove text-direction characters from the name')
  .refine((v) => !LONE_SURROGATE.test(v), 'Remove invalid characters from the name')
  .min(1, 'Enter a name')
  .regex(VISIBLE, 'Enter a name with at least one visible character')
  .max(100, 'Name is too long');
/** Shape only; the password policy (length, common passwords) is checked separately. */
export const password = z
  .string({ error: 'Enter a password' })
  .min(1, 'Enter a password')
  .max(1024, 'Password is too long')
  // Hashed as UTF-8, every lone surrogate would become U+FFFD: different passwords, one hash.
  .refine((v) => !LONE_SURROGATE.test(v), 'Remove invalid characters from the password');
/** The `_csrf` field that HTML forms send is allowed in every body. */
export const csrfField = { _csrf: z.string().max(200).optional() };
