/**
 * A signed-up user's browser as the session benches play it: one cookie jar that all its tabs
 * share, the CSRF token the last answer gave, and one login at a time for all the tabs — a
 * browser logged out in one tab is logged out in every tab, and they all wait for the same new
 * session. The answers are tallied by status the same way in every bench.
 */
import { randomBytes } from 'node:crypto';

/** The session cookie's name: SESSION_COOKIE_NAME's default, which the benches' servers keep. */
export const SESSION_COOKIE = 'sid';
const REQUEST_TIMEOUT_MS = 10_000;

/** An HTTP status, or what became of a request that got none. */
export type Status = number | 'error' | 'timeout';

/** The parts of the server's JSON answers the benches read. */
export interface SessionAnswer {
  csrfToken?: string;
  preferences?: Record<string, unknown>;
  session?: { backend?: unknown };
  error?: { code?: unknown };
}

export interface Answer {
  status: Status;
  json: SessionAnswer | undefined;
  /** The session cookie this request carried. */
  sent: string | undefined;
  /** What the answer set for the session cookie: '' if it cleared it, undefined if it left it alone. */
  set: string | undefined;
}

/** A browser's cookie jar, reduced to what these answers set: name=value, deleted when expired. */
export class BrowserJar {
  private readonly cookies = new Map<string, string>();
  /** `onSet` sees every cookie an answer sets, with '' for one it clears. */
  constructor(private readonly onSet?: (name: string, value: string) => void) {}
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  get(name: string): string | undefined {
    return this.cookies.get(name);
  }
  clear(): void {
    this.cookies.clear();
  }
  /** What the response set for the session cookie: '' if it cleared it, undefined if it left it alone. */
  apply(res: Response): string | undefined {
    let touched: string | undefined;
    for (const line of res.headers.getSetCookie()) {
      const [nv = '', ...attrs] = line.split(';');
      const i = nv.indexOf('=');
      const name = nv.slice(0, i).trim();
      const value = nv.slice(i + 1).trim();
      let expired = value === '';
      for (const a of attrs) {
        const [k = '', v = ''] = a.trim().split('=');
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
      if (name === SESSION_COOKIE) touched = expired ? '' : value;
      this.onSet?.(name, expired ? '' : value);
    }
    return touched;
  }
}

export class BrowserUser {
  readonly jar: BrowserJar;
  readonly password = `Pw-${randomBytes(12).toString('base64url')}`;
  csrf: string | undefined;
  /** Bumped by every relogin: answers to requests sent in an older session count for nothing. */
  gen = 0;
  private relogging: Promise<void> | null = null;

  constructor(
    readonly id: number,
    readonly email: string,
    onCookie?: (name: string, value: string) => void,
  ) {
    this.jar = new BrowserJar(onCookie);
  }

  /** The login every tab waits for before its next request, or null when none is under way. */
  get loggingIn(): Promise<void> | null {
    return this.relogging;
  }

  /** A request as a tab sends it: the jar's cookies, the CSRF token on writes, JSON both ways. */
  async send(url: string, method: string, body?: unknown): Promise<Answer> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const cookie = this.jar.header();
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && this.csrf) headers['x-csrf-token'] = this.csrf;
    const sent = this.jar.get(SESSION_COOKIE);
    let json: SessionAnswer | undefined;
    let status: Status;
    let set: string | undefined;
    try {
      const res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        redirect: 'manual',
      });
      status = res.status;
      // Where a browser takes the cookies: with the headers, before the body has arrived.
      set = this.jar.apply(res);
      const text = await res.text();
      try {
        json = text ? (JSON.parse(text) as SessionAnswer) : undefined;
      } catch {
        json = undefined;
      }
    } catch (err) {
      status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'error';
    }
    // Signup, login and GET /api/session hand out the token the next writes must carry.
    if ((status === 200 || status === 201) && typeof json?.csrfToken === 'string') this.csrf = json.csrfToken;
    return { status, json, sent, set };
  }

  /**
   * Logs in again once for all the tabs: whichever tab meets the 401 first starts it, the others
   * wait for it. `login` sends the login (through the bench's own request counting); the jar is
   * emptied before it, as a browser's is by the 401's cleared cookie.
   */
  relogin(login: () => Promise<void>): Promise<void> {
    this.relogging ??= (async () => {
      this.jar.clear();
      await login();
      this.gen++;
    })().finally(() => {
      this.relogging = null;
    });
    return this.relogging;
  }
}

export type StatusKey = '200' | '201' | '204' | '401' | '403' | '409' | '5xx' | 'other' | 'error' | 'timeout';

/** Every answer of a bench's users, by status. */
export class StatusCounts {
  requests = 0;
  readonly status: Record<StatusKey, number> = { 200: 0, 201: 0, 204: 0, 401: 0, 403: 0, 409: 0, '5xx': 0, other: 0, error: 0, timeout: 0 };
  add(s: Status): void {
    this.requests++;
    if (s === 'error' || s === 'timeout') this.status[s]++;
    else if (s >= 500) this.status['5xx']++;
    else if (String(s) in this.status) this.status[String(s) as StatusKey]++;
    else this.status.other++;
  }
}
