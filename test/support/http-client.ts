/**
 * A small browser-like HTTP client for black-box tests: keeps cookies (one jar per client),
 * remembers the CSRF token the API hands out, and returns parsed JSON.
 */
export interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
  // Convenience for assertions on JSON bodies.
  json: Record<string, unknown>;
  text: string;
}

export class Client {
  readonly cookies = new Map<string, string>();
  csrfToken: string | undefined;

  constructor(
    readonly baseUrl: string,
    private readonly userAgent = 'switchboard-test',
  ) {}

  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const h: Record<string, string> = { 'User-Agent': this.userAgent, ...headers };
    if (this.cookies.size) h.Cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (body !== undefined && typeof body !== 'string') h['Content-Type'] ??= 'application/json';
    if (this.csrfToken && !['GET', 'HEAD'].includes(method) && !('X-CSRF-Token' in headers)) h['X-CSRF-Token'] = this.csrfToken;
    const res = await fetch(this.baseUrl + path, { method, headers: h, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body), redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (!value || /expires=Thu, 01 Jan 1970/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    const json = (parsed && typeof parsed === 'object' ? parsed : {}) as Record<string, unknown>;
    if (typeof json.csrfToken === 'string') this.csrfToken = json.csrfToken;
    return { status: res.status, headers: res.headers, body: parsed, json, text };
  }

  get(path: string, headers?: Record<string, string>) {
    return this.request('GET', path, undefined, headers);
  }
  post(path: string, body?: unknown, headers?: Record<string, string>) {
    return this.request('POST', path, body ?? {}, headers);
  }
  put(path: string, body?: unknown, headers?: Record<string, string>) {
    return this.request('PUT', path, body ?? {}, headers);
  }
  patch(path: string, body?: unknown, headers?: Record<string, string>) {
    return this.request('PATCH', path, body ?? {}, headers);
  }
  delete(path: string, headers?: Record<string, string>) {
    return this.request('DELETE', path, undefined, headers);
  }

  /** Signs up a fresh user (unique email) and stays logged in. */
  async signup(overrides: Partial<{ email: string; password: string; name: string }> = {}) {
    const email = overrides.email ?? `user-${Math.random().toString(36).slice(2)}@example.com`;
    const password = overrides.password ?? 'correct horse battery staple';
    const res = await this.post('/api/signup', { email, password, name: overrides.name ?? 'Test User' });
    if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${res.text}`);
    return { email, password, user: res.json.user as { id: number; email: string } };
  }

  async login(email: string, password: string) {
    return this.post('/api/login', { email, password });
  }

  /** The session cookie value, for tests that replay or tamper with it. */
  sessionCookie(name = 'sid') {
    return this.cookies.get(name);
  }
}
