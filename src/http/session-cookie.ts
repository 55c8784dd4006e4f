/**
 * The session cookie on the wire: read from the request, written to the response. Only the
 * session middleware uses it, so only the middleware sets the cookie.
 */
import type { Context } from 'koa';
import type { Written } from '../sessions/backends.js';

export class SessionCookie {
  private readonly prefix: string;
  private readonly attributes: string;

  constructor(
    private readonly name: string,
    secure: boolean,
  ) {
    this.prefix = `${name}=`;
    // Written by hand rather than through ctx.cookies: the attributes in their canonical spelling
    // (the `cookies` package lowercases them), and Secure decided by COOKIE_SECURE alone — behind a
    // TLS-terminating proxy Koa may not know the request was https.
    this.attributes = `; Path=/${secure ? '; Secure' : ''}; HttpOnly; SameSite=Lax`;
  }

  /** The value the request's first cookie of this name holds, if any. */
  read(ctx: Context): string | undefined {
    return ctx.cookies.get(this.name);
  }

  /**
   * A browser sends two cookies of one name when they differ in Path or Domain (one left by an
   * older deployment, or set for the parent domain by a sibling app), and the first need not be
   * ours: the next few values in the Cookie `header`, after `first`, to try too.
   */
  othersIn(header: string, first: string): string[] {
    return header
      .split(';')
      .map((part) => part.trim())
      .filter((part) => part.startsWith(this.prefix))
      .map((part) => part.slice(this.prefix.length))
      .filter((value) => value !== first)
      .slice(0, 3);
  }

  /** Gives the browser `written`'s cookie, kept until the session's absolute expiry. */
  set(ctx: Context, written: Written) {
    this.write(ctx, written.cookieValue, new Date(written.record.absoluteExpiresAt));
  }

  /** Tells the browser to forget the cookie. */
  clear(ctx: Context) {
    this.write(ctx, '', new Date(0), '; Max-Age=0');
  }

  /** Replaces any Set-Cookie of this name the response already has: the browser gets one. */
  private write(ctx: Context, value: string, expires: Date, extra = '') {
    const others = ([] as string[]).concat(ctx.response.get('Set-Cookie') || []).filter((c) => !c.startsWith(this.prefix));
    ctx.set('Set-Cookie', [...others, `${this.name}=${value}; Expires=${expires.toUTCString()}${extra}${this.attributes}`]);
  }
}
