/**
 * What a form refused by the API brings back to its page when JavaScript is off
 * (form-navigation.ts): the sentence for each field (the API's `error.fields`) and what the
 * person typed, never a password. With JavaScript, app.js shows the same from the JSON answer.
 *
 * It travels in a sealed cookie that lives a minute and is read once, rather than in the
 * address: an email address in a URL ends up in the browser's history and in access logs, and a
 * message read from the address could be written by anyone who sends someone a link.
 */
import type { Context } from 'koa';
import { Sealer } from '../../sessions/sealer.js';

export interface FormFlash {
  /** The form it belongs to (its id in the page); another form's page ignores it. */
  form: string;
  fields: Record<string, string>;
  values: Record<string, string>;
}

interface Sealed extends FormFlash {
  /** When it was kept (ms): the seal outlives the cookie's Max-Age if a client ignores it. */
  at: number;
}

const MAX_AGE_MS = 60_000;
/** Bounds what a flash may carry, whatever the API sent: a few fields of short text. */
const MAX_ENTRIES = 8;
const MAX_TEXT = 500;
/**
 * Browsers keep a cookie of up to 4096 bytes, name and attributes included, and drop a larger
 * one without a word: the page would then show only the general sentence. 500 characters of a
 * non-Latin script are 1,500 bytes before the seal's base64, so a flash that would not fit
 * gives up what was typed first (cut short, then left out), then the sentences.
 */
const MAX_COOKIE_VALUE = 3800;

/** The string entries of an object (at most a few, each cut short); undefined for anything but an object. */
export function textRecord(value: unknown): Record<string, string> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const entries = Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string');
  return Object.fromEntries(entries.slice(0, MAX_ENTRIES).map(([k, v]) => [k.slice(0, 40), v.slice(0, MAX_TEXT)]));
}

export class FormFlashes {
  private readonly sealer: Sealer;
  private readonly name: string;
  private readonly attributes: string;

  /** `deployment`: as the session cookie's key, so that a staging copy given the same secrets cannot open these. */
  constructor(options: { secrets: readonly string[]; deployment?: string; sessionCookieName: string; secure: boolean }) {
    this.sealer = new Sealer(options.secrets, options.deployment === undefined ? 'form flash' : `form flash for deployment ${options.deployment}`);
    this.name = `${options.sessionCookieName}_form`;
    this.attributes = `; Path=/${options.secure ? '; Secure' : ''}; HttpOnly; SameSite=Lax`;
  }

  /** Sent with the redirect back to the form's page. */
  keep(ctx: Context, flash: FormFlash): void {
    const fields = textRecord(flash.fields) ?? {};
    const values = textRecord(flash.values) ?? {};
    const shortValues = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, v.slice(0, 60)]));
    let value = '';
    for (const [f, v] of [[fields, values], [fields, shortValues], [fields, {}], [{}, {}]] as const) {
      const sealed: Sealed = { form: flash.form, fields: f, values: v, at: Date.now() };
      value = this.sealer.seal(JSON.stringify(sealed));
      if (value.length <= MAX_COOKIE_VALUE) break;
    }
    this.setCookie(ctx, `${value}; Max-Age=${MAX_AGE_MS / 1000}`);
  }

  /** The flash for `form`, if this request brought one; it is cleared either way, so a reload shows a clean form. */
  take(ctx: Context, form: string): FormFlash | undefined {
    const cookie = ctx.cookies.get(this.name);
    if (cookie === undefined) return undefined;
    this.setCookie(ctx, '; Max-Age=0');
    const plain = this.sealer.open(cookie);
    if (plain === undefined) return undefined;
    let parsed: Partial<Sealed>;
    try {
      parsed = JSON.parse(plain) as Partial<Sealed>;
    } catch {
      return undefined;
    }
    const fields = textRecord(parsed.fields);
    const values = textRecord(parsed.values);
    const fresh = typeof parsed.at === 'number' && Date.now() - parsed.at <= MAX_AGE_MS;
    return parsed.form === form && fresh && fields && values ? { form, fields, values } : undefined;
  }

  private setCookie(ctx: Context, valueAndAge: string) {
    ctx.append('Set-Cookie', `${this.name}=${valueAndAge}${this.attributes}`);
  }
}
